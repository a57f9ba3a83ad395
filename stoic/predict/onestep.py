"""One-step-ahead evaluation of the predictor on a measured sequence of batches.

``stoic evaluate predictor`` replays measured batches in time order through the daemon's
own :class:`~stoic.predict.predictor.Predictor`: for each batch it first *asks* (the
estimate the controller would have had before placing it), then *observes* the measured
components, exactly as the recorder feeds the live predictor. So the figures are those
of the code that schedules, not of a re-implementation.

Scored per runtime and component (T_t, T_d, T_p, T_s): the mean absolute error, the MAE
of the sequence's own predictions where it has them (``pred_*`` columns of the STOIC
authors' CSV), and the coverage of the predicted central 50 % and 90 % intervals. An
interval is the estimate's mean ± z·std (z of the normal distribution): that is what the
predictor's ``Component(mean, std)`` claims, and coverage checks whether it means it.

Bytes are not in the authors' CSV; every image is taken as ``bytes_per_image``. T_t is
then learnt and predicted as a bandwidth of those nominal bytes, so the constant cancels.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

from stoic.errors import CsvFormatError, InputError
from stoic.predict.predictor import Predictor
from stoic.predict.spread import Z_LEVEL
from stoic.values import (
    Component,
    DeploymentSample,
    Estimate,
    ProcessingSample,
    RuntimeKind,
    TransferSample,
)

COMPONENTS = ("transfer", "deployment", "processing", "total")
"""T_t, T_d, T_p and T_s, as the CSV's ``act_*``/``pred_*`` columns name them."""
EDGE_COMPONENTS = ("processing", "total")
CSV_COLUMNS = {"transfer": "transfer", "deployment": "deploy", "processing": "proc"}
LEVELS = (0.5, 0.9)
APP, APP_VERSION = "evaluate", "1"
BYTES_PER_IMAGE = 212_000
"""Nominal bytes per image where the sequence has none (the paper's camera-trap JPEGs)."""


@dataclass(frozen=True, slots=True)
class MeasuredBatch:
    """One batch as measured: when, where, how many images, and each component's
    seconds (``None`` where not measured); ``reference`` holds another predictor's
    predictions of the same components, made before the batch (may be empty)."""

    at: float
    runtime: str
    images: int
    actual: dict[str, float]
    reference: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """The predictor's estimate of one batch, asked before the batch was observed."""

    batch: MeasuredBatch
    predicted: dict[str, Component]
    scored: bool
    edge: bool
    """An edge batch has no T_t or T_d to score (the CSV's zeros are not measurements)."""


@dataclass
class Score:
    """Errors of one runtime's component over the scored steps."""

    n: int = 0
    abs_error: float = 0.0
    reference_n: int = 0
    reference_abs_error: float = 0.0
    covered: dict[float, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))

    def add(self, actual: float, predicted: Component, reference: float | None) -> None:
        self.n += 1
        self.abs_error += abs(actual - predicted.mean)
        for level in LEVELS:
            half = NormalDist().inv_cdf(0.5 + level / 2) * predicted.std
            self.covered[level] += abs(actual - predicted.mean) <= half
        if reference is not None:
            self.reference_n += 1
            self.reference_abs_error += abs(actual - reference)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "mae_s": self.abs_error / self.n if self.n else None,
            "reference_mae_s": (
                self.reference_abs_error / self.reference_n if self.reference_n else None
            ),
            **{
                f"coverage_{round(100 * lv)}": (self.covered[lv] / self.n if self.n else None)
                for lv in LEVELS
            },
        }


def replay(
    predictor: Predictor,
    batches: Iterable[MeasuredBatch],
    *,
    skip: int = 3,
    bytes_per_image: int = BYTES_PER_IMAGE,
    cold_first_s: float | None = None,
) -> list[Step]:
    """Ask, then observe, each batch in order; the first ``skip`` of each runtime are
    observed but not scored (the predictor has nothing to go on yet): its *prior
    samples*. ``cold_first_s`` replaces the measured T_d of each cloud runtime's first
    batch (a what-if: that deployment pulled the image, a cold start)."""
    seen: dict[str, int] = {}
    steps: list[Step] = []
    for b in sorted(batches, key=lambda b: b.at):
        kind = _kind(predictor, b.runtime)
        if cold_first_s is not None and b.runtime not in seen and kind is not RuntimeKind.EDGE:
            b = _with_deployment(b, cold_first_s)
        n_bytes = b.images * bytes_per_image
        est = predictor.estimate(b.runtime, b.images, n_bytes, app=APP, app_version=APP_VERSION)
        edge = kind is RuntimeKind.EDGE
        steps.append(Step(b, components(est), seen.get(b.runtime, 0) >= skip, edge))
        seen[b.runtime] = seen.get(b.runtime, 0) + 1
        _observe(predictor, b, kind, n_bytes)
    return steps


def _with_deployment(b: MeasuredBatch, seconds: float) -> MeasuredBatch:
    """``b`` with a T_d of ``seconds``, its total moved by as much."""
    actual = dict(b.actual)
    shift = seconds - actual.get("deployment", 0.0)
    actual["deployment"] = seconds
    if "total" in actual:
        actual["total"] += shift
    return replace(b, actual=actual)


def score(steps: Sequence[Step]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per runtime, per component: :meth:`Score.summary` over the scored steps, and the
    same over all runtimes under ``"all"``."""
    scores: dict[str, dict[str, Score]] = {}
    for s in steps:
        if not s.scored:
            continue
        for runtime in (s.batch.runtime, "all"):
            per = scores.setdefault(runtime, {c: Score() for c in COMPONENTS})
            for c in EDGE_COMPONENTS if s.edge else COMPONENTS:
                actual = s.batch.actual.get(c)
                if actual is not None:
                    per[c].add(actual, s.predicted[c], s.batch.reference.get(c))
    return {r: {c: sc.summary() for c, sc in per.items()} for r, per in scores.items()}


def _kind(predictor: Predictor, runtime: str) -> RuntimeKind:
    for r in predictor.options.runtimes:
        if r.name == runtime:
            return r.kind
    raise InputError(f"unknown runtime {runtime!r}; configured: {predictor.runtimes}")


def components(est: Estimate) -> dict[str, Component]:
    return {c: getattr(est, c) for c in COMPONENTS}


def _observe(predictor: Predictor, b: MeasuredBatch, kind: RuntimeKind, n_bytes: int) -> None:
    """Feed what the recorder would feed after the batch ran."""
    a = b.actual
    if kind is not RuntimeKind.EDGE:
        if a.get("transfer") is not None and a["transfer"] > 0:
            predictor.observe_transfer(TransferSample(n_bytes, a["transfer"], b.at, b.runtime))
        if a.get("deployment") is not None:
            predictor.observe_deployment(DeploymentSample(b.runtime, b.at, a["deployment"]))
    if a.get("processing") is not None:
        predictor.observe_processing(
            ProcessingSample(APP, APP_VERSION, b.runtime, b.images, n_bytes, a["processing"], b.at)
        )


def plot_steps(steps: Sequence[Step], path: Path) -> None:
    """Predicted (with its 90 % interval) against actual over time, a row per runtime
    and a column per component (matplotlib: the analysis extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = sorted({s.batch.runtime for s in steps})
    fig, axes = plt.subplots(
        len(runtimes), len(COMPONENTS), figsize=(14, 2.4 * len(runtimes)), squeeze=False
    )
    for i, rt in enumerate(runtimes):
        mine = [s for s in steps if s.batch.runtime == rt]
        for j, c in enumerate(COMPONENTS):
            ax = axes[i][j]
            if mine[0].edge and c not in EDGE_COMPONENTS:
                ax.axis("off")  # no T_t or T_d on the edge
                continue
            k = list(range(len(mine)))
            mean = [s.predicted[c].mean for s in mine]
            half = [Z_LEVEL * s.predicted[c].std for s in mine]
            ax.fill_between(
                k,
                [m - h for m, h in zip(mean, half, strict=True)],
                [m + h for m, h in zip(mean, half, strict=True)],
                alpha=0.2,
                label="90 % interval",
            )
            ax.plot(k, mean, lw=1.2, label="predicted")
            ax.plot(
                k, [s.batch.actual.get(c, float("nan")) for s in mine], "o", ms=3, label="actual"
            )
            ax.set_title(f"{rt}: {c}", fontsize=9)
            ax.set_xlabel("batch (time order)")
            ax.set_ylabel("s")
            ax.grid(alpha=0.3)
    axes[0][COMPONENTS.index("processing")].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_components_csv(path: Path) -> list[MeasuredBatch]:
    """The STOIC authors' ``components.csv`` format: ``epoch``, ``image_num``,
    ``runtime``, ``act_transfer``, ``act_deploy``, ``act_proc``, and optionally
    ``pred_*`` of the same; a total is their sum (``act_total`` is not read: in that
    file it omits the upload). Raises :class:`CsvFormatError` naming the line."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CsvFormatError(name, 0, None, f"cannot read: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    need = ["epoch", "image_num", "runtime", "act_proc"]
    missing = [h for h in need if h not in header]
    if missing:
        raise CsvFormatError(name, 1, None, f"missing column(s) {', '.join(missing)}")
    out: list[MeasuredBatch] = []
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            images = int(row["image_num"])
            at = float(row["epoch"])
        except ValueError:
            raise CsvFormatError(name, line, "image_num", "not a number") from None
        if images < 1:
            raise CsvFormatError(name, line, "image_num", "must be at least 1")
        actual = _seconds(name, line, row, "act")
        if "processing" not in actual:
            raise CsvFormatError(name, line, "act_proc", "empty")
        reference = _seconds(name, line, row, "pred")
        # T_s is T_t + T_d + T_p, as the predictor predicts it: the authors' act_total
        # leaves the upload out (act_deploy + act_proc on every row), their pred_total not.
        for components in (actual, reference):
            parts = [components[c] for c in CSV_COLUMNS if c in components]
            if parts:
                components["total"] = sum(parts)
        out.append(MeasuredBatch(at, row["runtime"], images, actual, reference))
    if not out:
        raise CsvFormatError(name, 1, None, "no rows")
    return out


def _seconds(name: str, line: int, row: dict[str, str], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for comp, col in CSV_COLUMNS.items():
        text = row.get(f"{prefix}_{col}", "")
        if not text:
            continue
        try:
            v = float(text)
        except ValueError:
            raise CsvFormatError(name, line, f"{prefix}_{col}", "not a number") from None
        if not math.isfinite(v) or v < 0:
            raise CsvFormatError(name, line, f"{prefix}_{col}", "must be a duration >= 0")
        out[comp] = v
    return out
