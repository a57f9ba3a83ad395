"""The cloud budget's figures (docs/scheduling.md, "The cloud budget"), from the sweeps
``run.sh`` writes beside this file and the committed sweep (docs/evaluation/sweep).

    PYTHONPATH=. python docs/evaluation/budget/tables.py --budgets   # the budgets run.sh uses
    PYTHONPATH=. python docs/evaluation/budget/tables.py > docs/evaluation/budget/README.md

The budget of an environment is the GPU1 duplicator's mean pod-seconds × GPUs a day
(probes included) over seeds 0–2 of the committed sweep. Probe pricing off is the
committed sweep's cells of the same seeds (the default settings: bit for bit what a new
run gives, docs/evaluation/check_figures.py).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any

from stoic.replay.sweep import SweepResult, learning_gaps
from stoic.replay.sweep_report import load_sweep

HERE = Path(__file__).resolve().parent
SWEEP = HERE.parent / "sweep" / "sweep.json"
ENVS = ("nautilus-2020-real", "heavy-tail", "random-002", "random-004", "random-007")
SEEDS = (0, 1, 2)
DAYS = 3
MODES = ("selector", "duplicator", "share")


def merged(paths: list[Path]) -> SweepResult | None:
    """The sweeps at ``paths`` that exist, as one result (their cells together)."""
    found = [load_sweep(p) for p in paths if p.exists()]
    if not found:
        return None
    first = found[0]
    modes = [m for r in found for m in r.config.modes]
    cfg = replace(first.config, modes=list(dict.fromkeys(modes)))
    return SweepResult(cfg, [c for r in found for c in r.cells], {}, 1, 0.0)


def restrict(result: SweepResult, modes: tuple[str, ...]) -> SweepResult:
    """``result`` cut to :data:`ENVS`, :data:`SEEDS` and ``modes``."""
    cells = [
        c
        for c in result.cells
        if c.cell.env in ENVS and c.cell.seed in SEEDS and c.cell.mode in modes
    ]
    cfg = replace(
        result.config,
        envs=[e for e in result.config.envs if e.name in ENVS],
        modes=[m for m in result.config.modes if m in modes],
        seeds=SEEDS,
    )
    return SweepResult(cfg, cells, {}, result.jobs, result.wall_s)


def per(result: SweepResult, env: str, mode: str, key: str, *, details: bool = False) -> float:
    """The mean over seeds of a cell metric (or detail) of ``env`` and ``mode``."""
    vals = [
        (c.details if details else c.metrics)[key]
        for c in result.cells
        if c.ok and c.cell.env == env and c.cell.mode == mode
    ]
    if not vals:
        raise KeyError((env, mode, key))
    return float(mean(vals))


def budgets(off: SweepResult) -> dict[str, float]:
    return {e: per(off, e, "duplicator-gpu1", "pod_s") / DAYS for e in ENVS}


def gaps(result: SweepResult) -> dict[tuple[str, str], float]:
    return {(g.env, g.mode): 100 * g.mean for g in learning_gaps(result)}


def budget_table(off: SweepResult) -> list[str]:
    out = [
        "| environment | budget a day | GPU1 duplicator: latency | share, no budget: latency, "
        "pod-s a day | at the budget, probe pricing off: latency | pod-s a day | at the "
        "budget, probe pricing on: latency | pod-s a day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env, b in budgets(off).items():
        row = [
            env,
            f"{b:,.0f}",
            f"{per(off, env, 'duplicator-gpu1', 'mean_latency_s'):.1f} s",
            f"{per(off, env, 'share', 'mean_latency_s'):.1f} s, "
            f"{per(off, env, 'share', 'pod_s') / DAYS:,.0f}",
        ]
        for kind in ("budget", "budget-priced"):
            path = HERE / f"{kind}-{env}" / "sweep.json"
            if not path.exists():
                row += ["–", "–"]
                continue
            res = load_sweep(path)
            lat = {m: per(res, env, m, "mean_latency_s") for m in res.config.modes}
            best = min(lat, key=lambda m: lat[m])
            row += [
                f"{best.split('@')[0]}: {lat[best]:.1f} s",
                f"{per(res, env, best, 'pod_s') / DAYS:,.0f}",
            ]
        out.append("| " + " | ".join(row) + " |")
    return out


def probe_table(off: SweepResult, on: SweepResult) -> list[str]:
    g_off, g_on = gaps(off), gaps(on)
    out = [
        "| environment | mode | processing-probe pod-s / batch pod-s, off → on | all "
        "probe and bootstrap pod-s / batch pod-s, off → on | mean latency, off → on | "
        "learning gap (points), off → on |",
        "|---|---|---|---|---|---|",
    ]
    for env in ENVS:
        for mode in MODES:
            cols: list[dict[str, Any]] = []
            for res, g in ((off, g_off), (on, g_on)):
                if not any(c.cell.env == env and c.cell.mode == mode for c in res.cells):
                    break
                cols.append(
                    {
                        "probe": per(res, env, mode, "probe_cloud_s")
                        / per(res, env, mode, "cloud_used_s"),
                        "learn": per(res, env, mode, "pod_s_learning", details=True)
                        / per(res, env, mode, "pod_s_batches", details=True),
                        "lat": per(res, env, mode, "mean_latency_s"),
                        "gap": g.get((env, mode)),
                    }
                )
            if len(cols) < 2:
                continue
            a, b = cols

            def gap(x: float | None) -> str:
                return "–" if x is None else f"{x:+.1f}"

            out.append(
                f"| {env} | {mode} | {100 * a['probe']:.0f} % → {100 * b['probe']:.0f} % | "
                f"{100 * a['learn']:.0f} % → {100 * b['learn']:.0f} % | "
                f"{a['lat']:.1f} → {b['lat']:.1f} s | {gap(a['gap'])} → {gap(b['gap'])} |"
            )
    return out


def main(argv: list[str]) -> None:
    off = restrict(load_sweep(SWEEP), (*MODES, "duplicator-gpu1", "informed"))
    if "--budgets" in argv:
        for env, b in budgets(off).items():
            print(f"{env} {b:.0f}")
        return
    found = merged([HERE / f"probe-pricing-{k}" / "sweep.json" for k in ("selector", "race")])
    on = restrict(found, off.config.modes) if found is not None else None
    lines = [
        "# The cloud budget's figures",
        "",
        "Made by `sh docs/evaluation/budget/run.sh` (the sweeps in the folders beside this "
        "file) and `PYTHONPATH=. python docs/evaluation/budget/tables.py > "
        "docs/evaluation/budget/README.md`; 3 seeds × 3 days, one worker; probe pricing off: "
        "the committed sweep's cells of the same seeds. docs/scheduling.md, \"The cloud "
        'budget", says what they mean.',
        "",
        "## A budget equal to the GPU1 duplicator's pod-seconds",
        "",
        "Pod-seconds × GPUs a day, probes included. The budget is the GPU1 duplicator's "
        "(without a budget); the mode at the budget is share, the best mode without a "
        "budget in all five (the best of the modes run where more were run).",
        "",
        *budget_table(off),
        "",
        "## Probe pricing off and on (no budget)",
        "",
        "Batch pod-s: processing-probe pod-seconds (held after ready) against the batches' "
        "cloud seconds (ready to teardown); all: every probe and the bootstrap, from "
        "request to teardown, against the batches' pod-seconds from request. Learning "
        "gap: against the reference of the mode's action space (the informed mode run "
        "with the same probe pricing, the informed duplicator, the fluid bound).",
        "",
        *(probe_table(off, on) if on is not None else ["(not run)"]),
        "",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
