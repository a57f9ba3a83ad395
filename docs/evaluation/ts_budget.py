"""Where T_s's one-step error comes from (issue 24, "Done when": T_s MAE ≤ 8.5 s).

Replays a measured sequence through the daemon's own predictor (``stoic evaluate
predictor``'s :func:`~stoic.predict.onestep.replay`: ask, then observe) and splits the
error of T_s = T_t + T_d + T_p on the scored batches:

* per runtime, the summed absolute T_s error and what it becomes when one component
  is predicted exactly (an *oracle*: the other components' errors stay), so a
  component whose errors cancel another's shows as a gain, not a loss;
* the batches with the largest T_s errors, each component's share;
* T_d by other causal predictors of the same sequence (fixed median and mean windows,
  the samples of the last day only, each runtime's earlier first-after-idle
  deployments for its next first-after-idle one), each scored in T_s with the
  predictor's own T_t and T_p beside it;
* bounds, each a hindsight choice or a look at later batches: each runtime's best
  fixed window, an exact T_d on the first deployment after an idle spell, an exact T_d
  on the single largest deployment; T_p by the least-squares line of the runtime's
  batches of that day (with the batch itself, or without it).

Every figure is a mean over the scored batches (edge batches have T_p only), as
``stoic evaluate predictor`` reports them.

    PYTHONPATH=. .venv/bin/python docs/evaluation/ts_budget.py \\
        --csv ../shared/data/nautilus-2020-real/components.csv \\
        --config docs/evaluation/predictor/regimes.toml
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stoic.predict.onestep import Step, read_components_csv, replay
from stoic.predict.predictor import Predictor
from stoic.settings import load_settings

PARTS = ("transfer", "deployment", "processing")
IDLE_S = 3_600.0
"""A deployment after this long without one of its runtime is a first-after-idle one
(``predictor.deployment_cold_idle_s``'s default)."""
DAY_S = 86_400.0
WINDOWS = (1, 2, 3, 5, 10, 100)

History = list[tuple[float, float]]  # (at, T_d) of a runtime's earlier deployments
TdRule = Callable[[Step, History], float]
"""(the step, its runtime's deployments before it) -> the T_d to score."""
TpRule = Callable[[Step], float]
"""The step -> the T_p to score."""


@dataclass(frozen=True, slots=True)
class Scored:
    """A scored step and its runtime's T_d history before it."""

    step: Step
    history: History


def scored_steps(steps: Sequence[Step]) -> list[Scored]:
    """The scored steps, each with the (at, T_d) of its runtime's earlier cloud batches."""
    history: dict[str, History] = {}
    out: list[Scored] = []
    for s in steps:
        mine = history.setdefault(s.batch.runtime, [])
        if s.scored:
            out.append(Scored(s, list(mine)))
        if not s.edge and "deployment" in s.batch.actual:
            mine.append((s.batch.at, s.batch.actual["deployment"]))
    return out


def errors(s: Step, td: float | None = None, tp: float | None = None) -> dict[str, float]:
    """Actual minus predicted, per part (T_d by ``td``, T_p by ``tp`` where given), an
    edge step's T_p only."""
    parts = ("processing",) if s.edge else PARTS
    out = {c: s.batch.actual[c] - s.predicted[c].mean for c in parts}
    if td is not None and not s.edge:
        out["deployment"] = s.batch.actual["deployment"] - td
    if tp is not None:
        out["processing"] = s.batch.actual["processing"] - tp
    return out


def ts_mae(
    rows: Sequence[Scored],
    exact: Sequence[str] = (),
    td: TdRule | None = None,
    tp: TpRule | None = None,
) -> float:
    """T_s's MAE with the parts in ``exact`` predicted exactly, T_d by ``td`` and T_p by
    ``tp``."""
    total = 0.0
    for r in rows:
        d = None if td is None or r.step.edge else td(r.step, r.history)
        e = errors(r.step, d, None if tp is None else tp(r.step))
        total += abs(sum(v for c, v in e.items() if c not in exact))
    return total / len(rows) if rows else float("nan")


def tp_mae(rows: Sequence[Scored], tp: TpRule) -> float:
    return float(np.mean([abs(r.step.batch.actual["processing"] - tp(r.step)) for r in rows]))


def day_line(steps: Sequence[Step], *, leave_out: bool) -> TpRule:
    """T_p by the least-squares line of the runtime's batches of the same day (UTC),
    the batch itself among them or ``leave_out``: both know the day's later batches,
    so their figures are bounds on what a line of the session could know."""

    def rule(s: Step) -> float:
        day = s.batch.at // DAY_S
        same = [
            o.batch
            for o in steps
            if o.batch.runtime == s.batch.runtime
            and o.batch.at // DAY_S == day
            and not (leave_out and o is s)
        ]
        x = np.array([b.images for b in same], dtype=np.float64)
        y = np.array([b.actual["processing"] for b in same])
        if np.unique(x).size < 2:
            return float(y.mean())
        slope, intercept = np.polyfit(x, y, 1)
        return float(slope * s.batch.images + intercept)

    return rule


def td_mae(rows: Sequence[Scored], td: TdRule) -> float:
    cloud = [r for r in rows if not r.step.edge]
    return float(
        np.mean([abs(r.step.batch.actual["deployment"] - td(r.step, r.history)) for r in cloud])
    )


def predictor_td(s: Step, _: History) -> float:
    return s.predicted["deployment"].mean


def median_window(w: int) -> TdRule:
    return lambda _, h: float(np.median([v for _, v in h][-w:]))


def mean_window(w: int) -> TdRule:
    return lambda _, h: float(np.mean([v for _, v in h][-w:]))


def last_day(s: Step, h: History) -> float:
    """The median of the deployments within a day of the runtime's newest."""
    return float(np.median([v for at, v in h if h[-1][0] - at <= DAY_S]))


def first_after_idle(s: Step, h: History) -> bool:
    return not h or s.batch.at - h[-1][0] >= IDLE_S


def idle_firsts(h: History) -> list[float]:
    """The runtime's earlier first-after-idle deployments."""
    return [v for i, (at, v) in enumerate(h) if i == 0 or at - h[i - 1][0] >= IDLE_S]


def cold_level(s: Step, h: History) -> float:
    """A first-after-idle deployment predicted by the median of the runtime's earlier
    ones; the predictor's T_d otherwise."""
    firsts = idle_firsts(h)
    if first_after_idle(s, h) and firsts:
        return float(np.median(firsts))
    return predictor_td(s, h)


def exact_where(pick: Callable[[Step, History], bool]) -> TdRule:
    """T_d exact where ``pick`` says so, the predictor's elsewhere (a bound)."""
    return lambda s, h: s.batch.actual["deployment"] if pick(s, h) else predictor_td(s, h)


def best_windows(rows: Sequence[Scored]) -> dict[str, int]:
    """Each runtime's fixed median window with the least T_d MAE on these rows: a
    choice made in hindsight, so its figure is a bound, not a predictor."""
    best: dict[str, int] = {}
    for rt in sorted({r.step.batch.runtime for r in rows if not r.step.edge}):
        mine = [r for r in rows if r.step.batch.runtime == rt]
        best[rt] = min(range(1, 101), key=lambda w: td_mae(mine, median_window(w)))
    return best


def report(steps: Sequence[Step], target_s: float = 8.5) -> list[str]:
    """The tables of the module docstring, as Markdown lines."""
    rows = scored_steps(steps)
    n = len(rows)
    lines = [
        f"{n} scored batches; T_s MAE {ts_mae(rows):.2f} s (target {target_s} s: "
        f"the summed |error| must fall by {max(ts_mae(rows) - target_s, 0) * n:.1f} s)",
        "",
    ]
    lines += [
        "| runtime | batches | Σ|T_s error| | exact T_t | exact T_d | exact T_p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rt in [*sorted({r.step.batch.runtime for r in rows}), "all"]:
        mine = [r for r in rows if rt in ("all", r.step.batch.runtime)]
        sums = [ts_mae(mine, exact) * len(mine) for exact in ((), *((c,) for c in PARTS))]
        lines.append(f"| {rt} | {len(mine)} | " + " | ".join(f"{v:.1f} s" for v in sums) + " |")
    lines += [
        "",
        "| batch (runtime, images) | T_s error | T_t | T_d | T_p |",
        "|---|---:|---:|---:|---:|",
    ]
    ranked = sorted(rows, key=lambda r: -abs(sum(errors(r.step).values())))
    for r in ranked[:8]:
        e = errors(r.step)
        cells = [f"{e[c]:+.1f}" if c in e else "-" for c in PARTS]
        lines.append(
            f"| {r.step.batch.runtime}, {r.step.batch.images} | "
            f"{sum(e.values()):+.1f} | " + " | ".join(cells) + " |"
        )
    rules: list[tuple[str, TdRule]] = [("the predictor's (calibrated median window)", predictor_td)]
    rules += [(f"median of the last {w}", median_window(w)) for w in WINDOWS]
    rules += [(f"mean of the last {w}", mean_window(w)) for w in (2, 3, 5, 100)]
    rules += [
        ("median of the last day's", last_day),
        ("first after an idle hour: median of the earlier such", cold_level),
    ]
    best = best_windows(rows)
    largest = max((r.step.batch.actual["deployment"] for r in rows if not r.step.edge), default=0.0)
    bounds: list[tuple[str, TdRule]] = [
        (
            "bound: each runtime's best fixed window in hindsight "
            + ", ".join(f"{k} {v}" for k, v in best.items()),
            lambda s, h: median_window(best[s.batch.runtime])(s, h),
        ),
        ("bound: exact on first-after-idle deployments", exact_where(first_after_idle)),
        (
            "bound: both of the above",
            lambda s, h: (
                s.batch.actual["deployment"]
                if first_after_idle(s, h)
                else median_window(best[s.batch.runtime])(s, h)
            ),
        ),
        (
            f"bound: exact on the largest deployment ({largest:.1f} s)",
            exact_where(lambda s, _: s.batch.actual["deployment"] == largest),
        ),
        ("bound: exact everywhere", exact_where(lambda *_: True)),
    ]
    lines += ["", "| T_d by | T_d MAE | T_s MAE |", "|---|---:|---:|"]
    for name, rule in rules + bounds:
        lines.append(f"| {name} | {td_mae(rows, rule):.2f} s | {ts_mae(rows, td=rule):.2f} s |")
    lines += ["", "| T_p by | T_p MAE | T_s MAE |", "|---|---:|---:|"]
    lines.append(
        f"| the predictor's | {tp_mae(rows, lambda s: s.predicted['processing'].mean):.2f}"
        f" s | {ts_mae(rows):.2f} s |"
    )
    for name, leave_out in (("the other", True), ("all the", False)):
        tp = day_line(steps, leave_out=leave_out)
        lines.append(
            f"| bound: the line of {name} batches of its runtime's day | "
            f"{tp_mae(rows, tp):.2f} s | {ts_mae(rows, tp=tp):.2f} s |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--skip", type=int, default=3)
    args = ap.parse_args()
    predictor = Predictor.from_settings(load_settings(args.config))
    steps = replay(predictor, read_components_csv(args.csv), skip=args.skip)
    print("\n".join(report(steps)))


if __name__ == "__main__":
    main()
