"""The sweep: every environment × mode × seed, replayed in parallel and tabulated.

One replay says how a policy fares in one world; a policy worth keeping must fare well
in many. :func:`run_sweep` runs :func:`~stoic.replay.runner.run_replay` for every cell
(environment spec, mode, seed) in worker processes — replays are CPU-bound Python, so
processes, not threads — and aggregates each (environment, mode) over seeds.

* **One entry point.** A cell is a :class:`~stoic.replay.runner.ReplayConfig` run by
  the same ``run_replay`` as ``stoic replay``; modes are the strings the replay accepts,
  so a mode added to the replay is swept by naming it.
* **Open columns.** What is measured of a cell is the list :data:`METRICS`: a metric is
  a name, a label, a unit and a function of the replay's result and its score. Add one
  there (a top-level function, so workers have it) and it appears in the JSON, the
  Markdown table and the aggregates.
* **Failures stay local.** A spec that does not validate is found before any work (the
  error names the file and the key) and marks its cells failed; a cell that raises is
  recorded with its error; every other cell still runs, and the report is written. The
  caller decides what a failed cell means (the CLI exits non-zero after the report).
* **Deterministic.** A cell depends on its spec, mode and seed only: the same sweep gives
  the same figures with any number of workers.

Aggregates: mean, sample standard deviation (n − 1; 0 for one seed), min and max over
the seeds whose cell succeeded.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stoic.errors import InputError, StoicError

if TYPE_CHECKING:
    from stoic.replay.runner import ReplayResult

log = logging.getLogger(__name__)

DEFAULT_MODES = (
    "selector",
    "duplicator-gpu1",
    "duplicator-gpu2",
    "edge-only",
    "gpu1-only",
    "oracle",
)
#: Modes that need the ground truth; they are references, not candidates for "best".
REFERENCE_MODES = frozenset({"oracle", "informed"})


def is_reference(mode: str) -> bool:
    """A reference mode, with or without actions (``informed+deadline``)."""
    return mode.split("+", 1)[0] in REFERENCE_MODES


def informed_of(mode: str) -> str:
    """The informed mode of ``mode``'s action space: ``selector+deadline`` →
    ``informed+deadline``; any other single-runtime mode → ``informed``."""
    _, plus, actions = mode.partition("+")
    return f"informed{plus}{actions}"


#: The environments swept when none is named: the repository's family of specs.
DEFAULT_ENVS = (Path("workload/envs"),)
#: The sweep's lead environment, listed first wherever it is among the specs: the
#: calibration fitted to the STOIC authors' real runs (docs/envfit.md), which the sweep
#: and the evaluation docs default to; ``nautilus-2020`` stays the reproduction of the
#: paper's published figures.
LEAD_ENV = "nautilus-2020-real"


# Metrics ------------------------------------------------------------------------------

Unit = Literal["ratio", "s", "count"]


@dataclass(frozen=True)
class Metric:
    """One column: ``compute(result, scored)`` → a number (or None: not defined)."""

    key: str
    label: str
    unit: Unit
    compute: Callable[[ReplayResult, dict[str, Any]], float | None]
    lower_is_better: bool = True


def _summary(key: str) -> Callable[[ReplayResult, dict[str, Any]], float | None]:
    """The figure the scoring's summary holds under ``key`` (None where it is not defined)."""

    def compute(_: ReplayResult, scored: dict[str, Any]) -> float | None:
        v = scored["summary"][key]
        return None if v is None else float(v)

    return compute


def _gpus(result: ReplayResult, runtime: str) -> int:
    rt = result.env.runtimes.get(runtime)
    return max(rt.gpus, 1) if rt is not None else 1


def _cloud(result: ReplayResult, row: dict[str, Any], which: int) -> float:
    by = row.get("cloud_by") or {}
    if by:  # share mode: several pods per batch, each with its own GPUs
        return float(sum(v[which] * _gpus(result, k) for k, v in by.items()))
    key = "cloud_used_s" if which == 0 else "cloud_wasted_s"
    return float(row[key] * _gpus(result, row["planned"]))


def _cloud_used(result: ReplayResult, scored: dict[str, Any]) -> float:
    """Pod seconds (ready to teardown) × GPUs (a CPU pod counts 1) of every cloud leg,
    as Table 5 counts them."""
    return float(sum(_cloud(result, r, 0) for r in scored["batches"]))


def _cloud_wasted(result: ReplayResult, scored: dict[str, Any]) -> float:
    """The part of :func:`_cloud_used` spent on cloud legs that lost the race or whose
    call failed (a timed-out deployment has no ready pod and adds nothing); in share
    mode, pod seconds that labelled nothing new."""
    return float(sum(_cloud(result, r, 1) for r in scored["batches"]))


def _probe_cloud(result: ReplayResult, _: dict[str, Any]) -> float:
    """Pod seconds × GPUs the inquisitor's processing probes held after ready: a cost
    of learning that every mode pays (docs/scheduling.md), not a batch's."""
    held = result.probe_stats.get("processing_probe_cloud_s") or {}
    return float(sum(v * _gpus(result, k) for k, v in held.items()))


def _pod_s(_: ReplayResult, scored: dict[str, Any]) -> float:
    """Cloud pod seconds × GPUs from each deployment's request to its teardown: the
    batches' legs, the deployment and processing probes and the bootstrap."""
    return float(scored["summary"]["pod_s"])


METRICS: list[Metric] = [
    # What a user of the site waits for a batch, on average.
    Metric("mean_latency_s", "mean latency", "s", _summary("mean_latency_s")),
    # The 95th percentile over batches of latency ÷ the batch's hindsight best runtime.
    Metric("p95_vs_best", "p95 of latency ÷ best", "ratio", _summary("p95_vs_best")),
    Metric("vs_min_lat", "% of MIN-LAT", "ratio", _summary("vs_min_lat")),
    # Aggregate latency ÷ the mode's in-class reference (stoic.replay.reference).
    Metric("vs_class", "% of in-class ref.", "ratio", _summary("vs_class")),
    Metric("pod_s", "pod-s (×GPUs, probes incl.)", "s", _pod_s),
    Metric("success_rate", "success", "ratio", _summary("success_rate"), lower_is_better=False),
    Metric("vs_worst", "% of worst", "ratio", _summary("vs_worst")),
    Metric("vs_fluid", "% of fluid bound", "ratio", _summary("vs_fluid")),
    Metric("cloud_used_s", "cloud s used (×GPUs)", "s", _cloud_used),
    Metric("cloud_wasted_s", "cloud s wasted (×GPUs)", "s", _cloud_wasted),
    Metric("probe_cloud_s", "probe cloud s (×GPUs)", "s", _probe_cloud),
]


def metric(key: str) -> Metric:
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(key)


# Cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One replay of the sweep. Picklable: it crosses to a worker process."""

    env: str
    env_path: Path
    mode: str
    seed: int
    days: int
    batches: int | None = None  # per day; None: the replay's default (162)
    hours: int | None = None
    warmup_periods: int | None = None
    probes: str = "auto"
    probe_pricing: bool = False  # inquisitor.probe_pricing
    probe_share: float | None = None  # inquisitor.probe_share


@dataclass
class CellResult:
    cell: Cell
    metrics: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_cell(cell: Cell) -> CellResult:
    """Replay one cell and measure it (the work function of the worker processes).

    Never raises: an error becomes the result's ``error`` (a stoic error's own message,
    which names the file and key; anything else with its type and last frames).
    """
    from stoic.replay.runner import ReplayConfig, run_replay
    from stoic.replay.scoring import score
    from stoic.settings import Settings

    t0 = time.perf_counter()
    try:
        settings = Settings()
        probing: dict[str, Any] = {}
        if cell.probe_pricing:
            probing["probe_pricing"] = True
        if cell.probe_share is not None:
            probing["probe_share"] = cell.probe_share
        if probing:
            i = settings.inquisitor.model_copy(update=probing)
            settings = settings.model_copy(update={"inquisitor": i})
        cfg = ReplayConfig(
            settings=settings,
            env_path=cell.env_path,
            mode=cell.mode,
            days=cell.days,
            batches=cell.batches,
            hours=cell.hours,
            seed=cell.seed,
            probes=cell.probes,
            warmup_periods=cell.warmup_periods,
        )
        result = run_replay(cfg)
        scored = score(result)
        values = {m.key: m.compute(result, scored) for m in METRICS}
        s = scored["summary"]
        details = {
            "batches": s["batches"],
            "choices": s["choices"],
            "ran_on": s["ran_on"],
            "best": s["best"],
            "fell_back": s["fell_back"],
            "wrong_by_size": s["wrong_by_size"],
            "latency_s": s["latency_s"],
            "min_lat_s": s["min_lat_s"],
            "worst_s": s["worst_s"],
            "class_ref": s["class_ref"]["name"],
            "pod_s_batches": s["pod_s_batches"],
            "pod_s_learning": s["pod_s_learning"],
            **excess(scored["batches"]),
        }
        return CellResult(cell, values, details, None, time.perf_counter() - t0)
    except StoicError as exc:
        return CellResult(cell, error=str(exc), wall_s=time.perf_counter() - t0)
    except Exception as exc:  # a failing cell must not take the others with it
        where = "".join(traceback.format_exception(exc, limit=-3)).strip().splitlines()
        msg = f"{cell.env_path}: {type(exc).__name__}: {exc} ({' | '.join(where[-4:])})"
        return CellResult(cell, error=msg, wall_s=time.perf_counter() - t0)


def excess(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Where the latency above MIN-LAT went: by cause and by batch size (seconds).

    Causes, per batch: ``fell_back`` (the planned cloud leg failed — a deployment
    timeout — and the edge ran it after), ``wrong_choice`` (the scorer's success is
    false), ``right_choice`` (a right choice that still cost more than the best total,
    e.g. a duplicator's measured race, or a tie broken by noise). Negative excess (a
    duplicator beating every sequential total) counts too, so the causes sum to
    latency − MIN-LAT.
    """
    from stoic.replay.scoring import _bin

    cause: dict[str, float] = {"fell_back": 0.0, "wrong_choice": 0.0, "right_choice": 0.0}
    size: dict[str, float] = {}
    for r in rows:
        x = float(r["latency_s"] - r["min_lat_s"])
        key = (
            "fell_back" if r["fell_back"] else ("right_choice" if r["success"] else "wrong_choice")
        )
        cause[key] += x
        b = _bin(int(r["images"]))
        size[b] = size.get(b, 0.0) + x
    return {"excess_by_cause_s": cause, "excess_by_size_s": size}


def _init_worker() -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)


# The sweep -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvEntry:
    name: str
    path: Path


def discover_envs(paths: Iterable[Path]) -> list[EnvEntry]:
    """Spec files from files and directories (``*.yaml``/``*.yml``, sorted, with
    :data:`LEAD_ENV` first), named by file stem (or by path where two stems clash).
    Raises InputError if none is found."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise InputError(f"--envs: {p}: no *.yaml environment spec in this directory")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"--envs: {p}: no such file or directory")
    seen: dict[Path, Path] = {}
    for f in files:
        seen.setdefault(f.absolute(), f)
    unique = list(seen.values())
    stems = [f.stem for f in unique]
    out = []
    for f in unique:
        name = f.stem if stems.count(f.stem) == 1 else str(f)
        out.append(EnvEntry(name, f))
    return sorted(out, key=lambda e: e.path.stem != LEAD_ENV)


def check_env(path: Path) -> str | None:
    """None if the spec loads and covers the configured runtimes, else the error."""
    from stoic.backends.simulated import EnvSpec
    from stoic.settings import Settings

    try:
        EnvSpec.load(path).check_runtimes(Settings().runtime_list(), str(path))
    except StoicError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class SweepConfig:
    envs: Sequence[EnvEntry]
    modes: Sequence[str] = DEFAULT_MODES
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    days: int = 3
    batches: int | None = None
    hours: int | None = None
    warmup_periods: int | None = None
    probes: str = "auto"
    jobs: int | None = None  # None: every core this process may use
    probe_pricing: bool = False
    probe_share: float | None = None

    def cells(self) -> list[Cell]:
        return [
            Cell(
                e.name,
                e.path,
                mode,
                seed,
                self.days,
                self.batches,
                self.hours,
                self.warmup_periods,
                self.probes,
                self.probe_pricing,
                self.probe_share,
            )
            for e in self.envs
            for mode in self.modes
            for seed in self.seeds
        ]


@dataclass
class SweepResult:
    config: SweepConfig
    cells: list[CellResult]
    env_errors: dict[str, str]
    jobs: int
    wall_s: float

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if not c.ok]


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def with_budgets(modes: Iterable[str], budgets: Iterable[str]) -> list[str]:
    """The sweep's budget axis: each mode at each budget, ``MODE@B`` (pod-seconds × GPUs
    a day), or the mode alone for ``none`` (no budget). B keeps 15 significant digits, so
    a budget typed in decimal comes back from the mode's name as typed (``g``'s six made
    1234567 into 1.23457e+06)."""
    from stoic.replay.runner import parse_budget

    out = []
    for mode in modes:
        for b in budgets:
            b = b.strip().lower()
            if b in ("none", "unlimited"):
                out.append(mode)
            else:
                amount = parse_budget(b, "--budgets: expected none or a budget")
                out.append(f"{mode}@{amount:.15g}")
    return list(dict.fromkeys(out))


def check_modes(modes: Iterable[str]) -> None:
    """Fail before any work on a mode the replay does not know."""
    from stoic.replay.runner import parse_mode

    for m in modes:
        parse_mode(m)


def run_sweep(
    cfg: SweepConfig, progress: Callable[[CellResult, int, int], None] | None = None
) -> SweepResult:
    """Run every cell (in ``cfg.jobs`` worker processes; 1: in this process)."""
    t0 = time.perf_counter()
    check_modes(cfg.modes)
    jobs = cfg.jobs or default_jobs()
    env_errors = {e.name: err for e in cfg.envs if (err := check_env(e.path)) is not None}
    cells = cfg.cells()
    results: dict[Cell, CellResult] = {}
    for c in cells:
        if c.env in env_errors:
            results[c] = CellResult(c, error=env_errors[c.env])
    todo = [c for c in cells if c not in results]
    total, done = len(cells), len(results)
    if jobs == 1 or len(todo) <= 1:
        for c in todo:
            results[c] = r = run_cell(c)
            done += 1
            if progress:
                progress(r, done, total)
    else:
        # spawn, not fork: the parent may hold threads (the progress bar) and loggers.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker
        ) as pool:
            futures: dict[Future[CellResult], Cell] = {pool.submit(run_cell, c): c for c in todo}
            for fut in as_completed(futures):
                c = futures[fut]
                try:
                    r = fut.result()
                except Exception as exc:  # the worker died (killed, out of memory)
                    r = CellResult(c, error=f"{c.env_path}: worker failed: {exc!r}")
                results[c] = r
                done += 1
                if progress:
                    progress(r, done, total)
    ordered = [results[c] for c in cells]
    return SweepResult(cfg, ordered, env_errors, jobs, time.perf_counter() - t0)


# Aggregation ---------------------------------------------------------------------------


def aggregate(values: Sequence[float]) -> dict[str, float | int | None]:
    """mean, sample std (n − 1; 0 for one value), min, max, n."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}


def table(result: SweepResult) -> list[dict[str, Any]]:
    """One row per (environment, mode): the aggregates of every metric over seeds."""
    rows = []
    for e in result.config.envs:
        for mode in result.config.modes:
            cells = [c for c in result.cells if c.cell.env == e.name and c.cell.mode == mode]
            ok = [c for c in cells if c.ok]
            row: dict[str, Any] = {
                "env": e.name,
                "mode": mode,
                "seeds": len(cells),
                "failed": len(cells) - len(ok),
                "errors": sorted({c.error for c in cells if c.error}),
                "metrics": {},
            }
            for m in METRICS:
                vals = [v for c in ok if (v := c.metrics.get(m.key)) is not None]
                row["metrics"][m.key] = aggregate(vals)
            rows.append(row)
    return rows


# Learning gaps --------------------------------------------------------------------------

#: Points of MIN-LAT: the standard error a learning gap is steered by stays below one.
TARGET_SE = 0.01


@dataclass(frozen=True)
class Gap:
    """A mode's gap to the reference of its own action space in one environment: per
    seed (ours − the reference) ÷ MIN-LAT, a ratio (0.01 is one point of MIN-LAT)."""

    env: str
    mode: str
    reference: str
    bound: bool  # the reference is a proven bound (else an informed reference)
    per_seed: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.per_seed)

    @property
    def mean(self) -> float:
        return math.fsum(self.per_seed) / self.n

    @property
    def sd(self) -> float | None:
        """The sample standard deviation (n − 1); None for fewer than two seeds."""
        agg = aggregate(self.per_seed)
        return float(agg["std"]) if self.n > 1 and agg["std"] is not None else None

    @property
    def se(self) -> float | None:
        """The standard error of the mean over seeds, sd / √n."""
        return None if self.sd is None else self.sd / math.sqrt(self.n)

    @property
    def seeds_for_target(self) -> int | None:
        """Seeds at which this spread would put the standard error under
        :data:`TARGET_SE` (at least two: one seed has no spread to measure)."""
        if self.sd is None:
            return None
        return max(2, math.floor((self.sd / TARGET_SE) ** 2) + 1)


def learning_gaps(result: SweepResult) -> list[Gap]:
    """Each (environment, mode)'s gap to the reference of its action space, paired
    seed by seed (the same worlds, so the spread is the gap's own, not the worlds').

    A single-runtime mode (its in-class reference is the informed selector) is set
    against the ``informed`` mode of its action space (:func:`informed_of`) of the same
    environment and seed where the sweep ran it: the same requester, timeouts and
    fallbacks included. Every other mode, and a single-runtime one where ``informed``
    is missing, against its in-class reference (the cell's ``vs_class``): the informed
    duplicator for the adaptive duplicator, the hindsight race for a fixed one, the
    fluid bound for share.
    References themselves (:data:`REFERENCE_MODES`) have none."""
    ok = {(c.cell.env, c.cell.mode, c.cell.seed): c for c in result.cells if c.ok}
    out: list[Gap] = []
    for e in result.config.envs:
        for mode in result.config.modes:
            if is_reference(mode):
                continue
            per_seed: list[float] = []
            names: set[str] = set()
            bound = True
            for seed in result.config.seeds:
                c = ok.get((e.name, mode, seed))
                if c is None:
                    continue
                row = _gap(c, ok.get((e.name, informed_of(mode), seed)))
                if row is None:
                    continue
                name, is_bound, value = row
                per_seed.append(value)
                names.add(name)
                bound = bound and is_bound
            if per_seed:
                out.append(Gap(e.name, mode, " / ".join(sorted(names)), bound, tuple(per_seed)))
    return out


def _gap(c: CellResult, informed: CellResult | None) -> tuple[str, bool, float] | None:
    """(reference, is a bound, gap) of one cell; None where its figures are missing."""
    from stoic.replay.reference import INFORMED_REFERENCES, INFORMED_SELECTOR

    d, m = c.details, c.metrics
    lat, min_lat, name = d.get("latency_s"), d.get("min_lat_s"), d.get("class_ref")
    if lat is None or not min_lat or name is None:
        return None
    if name == INFORMED_SELECTOR and informed is not None and informed.ok:
        ref = informed.details.get("latency_s")
        if ref is not None:
            return "informed (mode)", False, (lat - ref) / min_lat
    vs_class = m.get("vs_class")
    if not vs_class:
        return None
    return str(name), name not in INFORMED_REFERENCES, (lat - lat / vs_class) / min_lat
