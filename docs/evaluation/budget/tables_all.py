"""The cloud budget over every environment (docs/evaluation/README.md, "The cloud
budget over every environment"), from the sweeps ``run-all.sh`` writes under ``all/``.

    PYTHONPATH=. python docs/evaluation/budget/tables_all.py --budgets   # what run-all.sh uses
    PYTHONPATH=. python docs/evaluation/budget/tables_all.py             # the table

The budget of an environment is the GPU1 duplicator's mean pod-seconds × GPUs a day
(probes included) over seeds 0–2, 3 days, without a budget: the committed sweep's cells
(docs/evaluation/sweep) where it has the environment, else ``all/ENV/gpu1``, a sweep of
that mode alone. The modes at the budget run in ``all/ENV`` (3 seeds × 3 days); the
best of them is the one of least mean latency.
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import mean

from stoic.replay.sweep import SweepResult
from stoic.replay.sweep_report import load_sweep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ALL = HERE / "all"
SWEEP = HERE.parent / "sweep" / "sweep.json"
RANDOM = Path("docs/evaluation/sweep/envs")
WORKLOAD = Path("workload/envs")
#: The order run-all.sh runs them in: the environments no budget figure had measured
#: first (those the committed sweep lacks, then the rest of the sweep's), then the five
#: of budget/README.md.
ENVS = (
    "deploy-cache-mixture",
    "edge-afternoon-spell",
    "edge-step",
    "turbulent-cloud",
    "congested-processing",
    "contended-cloud",
    "fast-cloud",
    "jetson-edge",
    "leo-satellite",
    "nautilus-2020",
    "pi-edge",
    "rural-lte",
    "random-000",
    "random-001",
    "random-003",
    "random-005",
    "random-006",
    "random-008",
    "random-009",
    "nautilus-2020-real",
    "heavy-tail",
    "random-002",
    "random-004",
    "random-007",
)
SEEDS = (0, 1, 2)
DAYS = 3
REFERENCE = "duplicator-gpu1"
MODES = ("share", "selector+deadline+pipelined")


def spec(env: str) -> Path:
    """The environment's spec file, relative to the repository root."""
    return RANDOM / f"{env}.yaml" if env.startswith("random-") else WORKLOAD / f"{env}.yaml"


def per(result: SweepResult, env: str, mode: str, key: str) -> float | None:
    """The mean over :data:`SEEDS` of a cell metric of ``env`` and ``mode``; None if the
    result lacks any of those seeds."""
    vals = {
        c.cell.seed: float(c.metrics[key])
        for c in result.cells
        if c.ok and c.cell.env == env and c.cell.mode == mode and c.cell.seed in SEEDS
    }
    return mean(vals.values()) if set(vals) == set(SEEDS) else None


def reference(env: str, committed: SweepResult) -> SweepResult | None:
    """The sweep holding the GPU1 duplicator's cells of ``env`` (without a budget)."""
    if per(committed, env, REFERENCE, "pod_s") is not None:
        return committed
    path = ALL / env / "gpu1" / "sweep.json"
    return load_sweep(path) if path.exists() else None


def budget(env: str, committed: SweepResult) -> float | None:
    ref = reference(env, committed)
    pod_s = per(ref, env, REFERENCE, "pod_s") if ref is not None else None
    return None if pod_s is None else pod_s / DAYS


def at_budget(env: str, b: float) -> dict[str, tuple[float, float]]:
    """Each mode of ``all/ENV`` at the budget: (mean latency, pod-s a day)."""
    path = ALL / env / "sweep.json"
    if not path.exists():
        return {}
    res = load_sweep(path)
    out: dict[str, tuple[float, float]] = {}
    names = {m.rpartition("@")[0]: m for m in res.config.modes if "@" in m}
    for mode in MODES:
        if mode not in names:
            continue
        name = names[mode]
        lat, pod_s = per(res, env, name, "mean_latency_s"), per(res, env, name, "pod_s")
        if lat is not None and pod_s is not None:
            out[mode] = (lat, pod_s / DAYS)
    return out


def table(committed: SweepResult) -> tuple[list[str], int, int]:
    """The table's lines, the environments where the best mode beats the GPU1
    duplicator, and the environments measured."""
    out = [
        "| environment | budget B (pod-s a day) | GPU1 duplicator: latency | share@B: latency, "
        "pod-s a day (÷ B) | selector+deadline+pipelined@B: latency, pod-s a day (÷ B) | "
        "best at B | best ÷ GPU1 duplicator |",
        "|---|---|---|---|---|---|---|",
    ]
    wins = measured = 0
    for env in ENVS:
        b = budget(env, committed)
        ref = reference(env, committed)
        if b is None or ref is None:
            out.append(f"| {env} | – | – | – | – | not run | – |")
            continue
        gpu1 = per(ref, env, REFERENCE, "mean_latency_s")
        assert gpu1 is not None
        modes = at_budget(env, b)
        cols = [
            f"{modes[m][0]:.1f} s, {modes[m][1]:,.0f} ({modes[m][1] / b:.3f})"
            if m in modes
            else "–"
            for m in MODES
        ]
        if not modes:
            out.append(f"| {env} | {b:,.0f} | {gpu1:.1f} s | {' | '.join(cols)} | not run | – |")
            continue
        best = min(modes, key=lambda m: modes[m][0])
        ratio = modes[best][0] / gpu1
        measured += 1
        wins += ratio < 1
        mark = "" if ratio < 1 else " **(no)**"
        out.append(
            f"| {env} | {b:,.0f} | {gpu1:.1f} s | {' | '.join(cols)} | {best} | "
            f"{100 * ratio:.1f} %{mark} |"
        )
    return out, wins, measured


def main(argv: list[str]) -> None:
    committed = load_sweep(SWEEP)
    if "--budgets" in argv:
        for env in ENVS:
            b = budget(env, committed)
            print(f"{env} {spec(env)} {'-' if b is None else f'{b:.0f}'}")
        return
    lines, wins, measured = table(committed)
    print("\n".join(lines))
    print()
    print(
        f"The best mode at B below the GPU1 duplicator's mean latency: {wins} of {measured} "
        f"environments measured ({len(ENVS)} in all)."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
