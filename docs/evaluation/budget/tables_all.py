"""The cloud budget over every environment (docs/evaluation/README.md, "The cloud
budget over every environment"), from the sweeps ``run-all.sh`` writes under ``all/``.

    PYTHONPATH=. python docs/evaluation/budget/tables_all.py --budgets   # what run-all.sh uses
    PYTHONPATH=. python docs/evaluation/budget/tables_all.py > docs/evaluation/budget/all/README.md
    PYTHONPATH=. python docs/evaluation/budget/tables_all.py --priced >> (the same)

The budget of an environment is the GPU1 duplicator's mean pod-seconds × GPUs a day
(probes included) over seeds 0–2, 3 days, without a budget: the committed sweep's cells
(docs/evaluation/sweep) where it has the environment, else ``all/ENV/gpu1``, a sweep of
that mode alone. The modes at the budget run in ``all/ENV`` (3 seeds × 3 days); the
best of them is the one of least mean latency. With ``--priced`` every sweep runs with
``inquisitor.probe_pricing`` on, the GPU1 duplicator's included (``all/ENV/priced``):
with it off, probes and the bootstrap, which every mode pays alike, are some 90 % of B,
so B leaves the batches about what they would spend anyway.
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
ACTIONS = HERE.parent / "actions-all"
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
    """The mean over :data:`SEEDS` of a cell metric (or, failing that, detail) of
    ``env`` and ``mode``; None if the result lacks any of those seeds."""
    vals: dict[int, float] = {}
    for c in result.cells:
        if c.ok and c.cell.env == env and c.cell.mode == mode and c.cell.seed in SEEDS:
            value = c.metrics[key] if key in c.metrics else c.details[key]
            if value is not None:
                vals[c.cell.seed] = float(value)
    return mean(vals.values()) if set(vals) == set(SEEDS) else None


def folder(env: str, priced: bool) -> Path:
    """Where run-all.sh writes ``env``'s sweeps at the budget: ``all/ENV``, or with
    probe pricing on (both the budget's GPU1 duplicator and the modes) ``all/ENV/priced``."""
    return ALL / env / "priced" if priced else ALL / env


def reference(env: str, committed: SweepResult, priced: bool) -> SweepResult | None:
    """The sweep holding the GPU1 duplicator's cells of ``env`` (without a budget)."""
    if not priced and per(committed, env, REFERENCE, "pod_s") is not None:
        return committed
    path = folder(env, priced) / "gpu1" / "sweep.json"
    return load_sweep(path) if path.exists() else None


def unbudgeted_share(env: str, committed: SweepResult, priced: bool) -> SweepResult | None:
    """The sweep holding share's cells of ``env`` without a budget, seeds 0–2: the
    committed sweep or else docs/evaluation/actions-all (the same replays); None with
    probe pricing on (not run)."""
    if priced:
        return None
    found = [committed]
    path = ACTIONS / env / "sweep.json"
    if path.exists():
        found.append(load_sweep(path))
    return next((r for r in found if per(r, env, "share", "pod_s") is not None), None)


def figures(result: SweepResult | None, env: str, mode: str) -> tuple[float, ...] | None:
    """(mean latency, pod-s a day, batch pod-s a day) of ``mode`` in ``env``."""
    if result is None:
        return None
    keys = ("mean_latency_s", "pod_s", "pod_s_batches")
    vals = [per(result, env, mode, k) for k in keys]
    if any(v is None for v in vals):
        return None
    lat, pod_s, batches = (float(v or 0) for v in vals)
    return lat, pod_s / DAYS, batches / DAYS


def budget(env: str, committed: SweepResult, priced: bool) -> float | None:
    ref = reference(env, committed, priced)
    pod_s = per(ref, env, REFERENCE, "pod_s") if ref is not None else None
    return None if pod_s is None else pod_s / DAYS


def at_budget(env: str, priced: bool) -> dict[str, tuple[float, ...]]:
    """Each mode at the budget: :func:`figures`."""
    path = folder(env, priced) / "sweep.json"
    if not path.exists():
        return {}
    res = load_sweep(path)
    names = {m.rpartition("@")[0]: m for m in res.config.modes if "@" in m}
    found = {m: figures(res, env, names[m]) for m in MODES if m in names}
    return {m: f for m, f in found.items() if f is not None}


def table(committed: SweepResult, priced: bool) -> tuple[list[str], list[str], dict[str, int], int]:
    """The latency table's lines, the batch pod-seconds table's, the environments where
    each mode (and ``best``) beats the GPU1 duplicator, and the environments measured."""
    out = [
        "| environment | budget B (pod-s a day) | GPU1 duplicator: latency | share, no budget: "
        "latency, pod-s a day (÷ B) | share@B: latency, pod-s a day (÷ B) | "
        "selector+deadline+pipelined@B: latency, pod-s a day (÷ B) | best at B | "
        "best ÷ GPU1 duplicator |",
        "|---|---|---|---|---|---|---|---|",
    ]
    spend = [
        "| environment | GPU1 duplicator (÷ B) | share, no budget (÷ GPU1 duplicator's) | "
        "share@B | selector+deadline+pipelined@B |",
        "|---|---|---|---|---|",
    ]
    wins = dict.fromkeys((*MODES, "best"), 0)
    measured = 0
    for env in ENVS:
        b = budget(env, committed, priced)
        ref = reference(env, committed, priced)
        if b is None or ref is None:
            out.append(f"| {env} | – | – | – | – | – | not run | – |")
            continue
        gpu1 = figures(ref, env, REFERENCE)
        assert gpu1 is not None
        modes = at_budget(env, priced)
        free = figures(unbudgeted_share(env, committed, priced), env, "share")
        cols = [
            "–" if x is None else f"{x[0]:.1f} s, {x[1]:,.0f} ({x[1] / b:.3f})"
            for x in (free, *(modes.get(m) for m in MODES))
        ]
        spend.append(
            f"| {env} | {gpu1[2]:,.0f} ({gpu1[2] / b:.1%}) | "
            + " | ".join(
                "–" if x is None else f"{x[2]:,.0f} ({x[2] / gpu1[2]:.2f}×)"
                for x in (free, *(modes.get(m) for m in MODES))
            )
            + " |"
        )
        if not modes:
            out.append(f"| {env} | {b:,.0f} | {gpu1[0]:.1f} s | {' | '.join(cols)} | not run | – |")
            continue
        best = min(modes, key=lambda m: modes[m][0])
        ratio = modes[best][0] / gpu1[0]
        measured += 1
        wins["best"] += ratio < 1
        for m, f in modes.items():
            wins[m] += f[0] < gpu1[0]
        mark = "" if ratio < 1 else " **(no)**"
        out.append(
            f"| {env} | {b:,.0f} | {gpu1[0]:.1f} s | {' | '.join(cols)} | {best} | "
            f"{100 * ratio:.1f} %{mark} |"
        )
    return out, spend, wins, measured


def main(argv: list[str]) -> None:
    committed = load_sweep(SWEEP)
    priced = "--priced" in argv
    if "--budgets" in argv:
        for env in ENVS:
            b = budget(env, committed, priced)
            print(f"{env} {spec(env)} {'-' if b is None else f'{b:.0f}'}")
        return
    lines, spend, wins, measured = table(committed, priced)
    title = (
        "Probe pricing on (`--probe-pricing`), the budget's GPU1 duplicator included"
        if priced
        else "Probe pricing off (the default)"
    )
    if not priced:
        print(
            "# The cloud budget over every environment\n\n"
            "Made by `sh docs/evaluation/budget/run-all.sh` and "
            "`docs/evaluation/budget/tables_all.py` (its docstring has the commands); "
            "3 seeds × 3 days, one worker. B: the GPU1 duplicator's mean pod-seconds × GPUs "
            'a day, probes included, without a budget. docs/evaluation/README.md, "The '
            'cloud budget over every environment", reads the figures.\n'
        )
    print(f"## {title}\n")
    print("\n".join(lines))
    print()
    each = ", ".join(f"{m}@B on {wins[m]}" for m in MODES)
    print(
        f"The best mode at B below the GPU1 duplicator's mean latency: {wins['best']} of "
        f"{measured} environments measured ({len(ENVS)} in all); {each}."
    )
    print()
    print("Batch pod-s a day (the batches' pod-seconds × GPUs from request, probes and")
    print("bootstrap left out):")
    print()
    print("\n".join(spend))


if __name__ == "__main__":
    main(sys.argv[1:])
