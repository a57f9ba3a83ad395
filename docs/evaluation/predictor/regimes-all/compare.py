"""The tables of docs/predictor.md, "Every regime option together", from sweep reports:
each environment's selector and informed % of MIN-LAT, the learning gap (selector −
informed, seed by seed) and the paired change of the selector, mean ± standard error.

    python docs/evaluation/predictor/regimes-all/compare.py BEFORE AFTER [SELECTOR INFORMED]

BEFORE and AFTER are folders holding a sweep.json, or folders of such folders (one sweep
per environment, as docs/evaluation/actions-all/), or several of either joined by commas
(more seeds of the same environments); only the seeds both hold are paired.
SELECTOR and INFORMED name the two modes compared (default: selector and informed;
docs/evaluation/README.md's actions: selector+deadline+pipelined and
informed+deadline+pipelined).

    python docs/evaluation/predictor/regimes-all/compare.py BEFORE AFTER --gaps MODE

prints instead each environment's learning gap of MODE as the sweeps computed it against
MODE's own reference (``learning_gaps`` in sweep.json: the duplicator's is the informed
duplicator), and

    python docs/evaluation/predictor/regimes-all/compare.py BEFORE AFTER --ledger

the probe ledger's table (docs/scheduling.md, "The probe ledger") of the selector with
the deploy deadline and the pipelined upload: its processing probes' pod-seconds over
its batches' (``probe_cloud_s`` ÷ ``cloud_used_s``, means over the seeds), its learning
gap against each sweep's own informed reference of the same actions, and whether AFTER
holds the ratio to 25 % with the gap growing by at most half a point.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

Cells = dict[str, dict[int, dict[str, Any]]]
"""A mode's cells of one or more sweeps: environment → seed → cell."""


def _sweeps(folder: str) -> list[dict[str, Any]]:
    """The sweep.json documents of ``folder``: one, a folder of them, or several of
    either joined by commas."""
    paths: list[Path] = []
    for one in folder.split(","):
        path = Path(one) / "sweep.json"
        paths += [path] if path.exists() else sorted(Path(one).glob("*/sweep.json"))
    return [json.loads(path.read_text()) for path in paths]


def cells(folder: str, mode: str) -> Cells:
    out: Cells = defaultdict(dict)
    for sweep in _sweeps(folder):
        for c in sweep["cells"]:
            if c["mode"] == mode and not c["error"]:
                out[c["env"]][c["seed"]] = c
    return out


def load(folder: str, modes: tuple[str, str]) -> dict[tuple[str, str], dict[int, float]]:
    """% of MIN-LAT by (environment, "selector" or "informed") and seed."""
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for role, mode in zip(("selector", "informed"), modes, strict=True):
        for env, by_seed in cells(folder, mode).items():
            out[(env, role)] = {s: 100 * c["metrics"]["vs_min_lat"] for s, c in by_seed.items()}
    return out


def sweep_gaps(folder: str, mode: str) -> dict[str, dict[str, float]]:
    """The sweeps' own learning gaps of ``mode`` by environment (fractions of MIN-LAT)."""
    return {
        g["env"]: g
        for sweep in _sweeps(folder)
        for g in sweep["learning_gaps"]
        if g["mode"] == mode
    }


def print_gaps(before: str, after: str, mode: str) -> None:
    a, b = sweep_gaps(before, mode), sweep_gaps(after, mode)
    print(f"| environment | {mode}: gap before | gap after |")
    print("|---|---:|---:|")
    for env in sorted(b):
        cells = [f"{100 * g['mean']:+.1f} ± {100 * g['se']:.1f}" for g in (a[env], b[env])]
        print(f"| {env} | {cells[0]} | {cells[1]} |")
    summed = [sum(100 * g[e]["mean"] for e in b) for g in (a, b)]
    ok = [sum(100 * g[e]["mean"] <= 2 for e in b) for g in (a, b)]
    print(f"\nThe learning gaps summed: {summed[0]:+.1f} → {summed[1]:+.1f}")
    print(f"Gaps of at most 2 points: {ok[0]} → {ok[1]}")


def _ratio(cells: list[dict[str, Any]]) -> float:
    def value(c: dict[str, Any], key: str) -> float:
        return float(c["metrics"].get(key) or c["details"].get(key) or 0.0)

    used = statistics.mean(value(c, "cloud_used_s") for c in cells)
    return statistics.mean(value(c, "probe_cloud_s") for c in cells) / used


def print_ledger(before: str, after: str) -> None:
    selector, informed = "selector+deadline+pipelined", "informed+deadline+pipelined"
    sb, ib = cells(before, selector), cells(before, informed)
    sa, ia = cells(after, selector), cells(after, informed)
    print("| environment | probes ÷ batches before | after | gap before | after | growth | both |")
    print("|---|---:|---:|---:|---:|---:|---|")
    met = 0
    for env in sorted(sa):
        seeds = sorted(set(sa[env]) & set(sb[env]))
        ratios = [_ratio([by_env[env][s] for s in seeds]) for by_env in (sb, sa)]
        gaps = [
            [
                100 * (sel[env][s]["metrics"]["vs_min_lat"] - inf[env][s]["metrics"]["vs_min_lat"])
                for s in seeds
            ]
            for sel, inf in ((sb, ib), (sa, ia))
        ]
        growth = [y - x for x, y in zip(*gaps, strict=True)]
        ok = ratios[1] <= 0.25 and statistics.mean(growth) <= 0.5
        met += ok
        print(
            f"| {env} | {100 * ratios[0]:.1f} % | {100 * ratios[1]:.1f} % | {mean_se(gaps[0])} "
            f"| {mean_se(gaps[1])} | {mean_se(growth)} | {'yes' if ok else 'no'} |"
        )
    print(f"\n{met} of {len(sa)} environments meet both.")


def mean_se(xs: list[float]) -> str:
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.1f} ± {se:.1f}"


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[3] == "--ledger":
        print_ledger(sys.argv[1], sys.argv[2])
        return
    if len(sys.argv) > 4 and sys.argv[3] == "--gaps":
        print_gaps(sys.argv[1], sys.argv[2], sys.argv[4])
        return
    modes = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("selector", "informed")
    a, b = load(sys.argv[1], modes), load(sys.argv[2], modes)
    print("| environment | seeds | selector | informed | gap before | gap after | paired |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total_a = total_b = gaps_a = gaps_b = 0.0
    ok_a = ok_b = 0
    for env in sorted({k[0] for k in b}):
        seeds = sorted(set(a[(env, "selector")]) & set(b[(env, "selector")]))
        sa = [a[(env, "selector")][s] for s in seeds]
        sb = [b[(env, "selector")][s] for s in seeds]
        ga = [a[(env, "selector")][s] - a[(env, "informed")][s] for s in seeds]
        gb = [b[(env, "selector")][s] - b[(env, "informed")][s] for s in seeds]
        ia = statistics.mean(a[(env, "informed")][s] for s in seeds)
        ib = statistics.mean(b[(env, "informed")][s] for s in seeds)
        total_a += statistics.mean(sa)
        total_b += statistics.mean(sb)
        gaps_a += statistics.mean(ga)
        gaps_b += statistics.mean(gb)
        ok_a += statistics.mean(ga) <= 2
        ok_b += statistics.mean(gb) <= 2
        print(
            f"| {env} | {len(seeds)} | {statistics.mean(sa):.1f} → {statistics.mean(sb):.1f} "
            f"| {ia:.1f} → {ib:.1f} | {mean_se(ga)} | {mean_se(gb)} "
            f"| {mean_se([y - x for x, y in zip(sa, sb, strict=True)])} |"
        )
    print(f"\nThe selector summed: {total_a:.1f} → {total_b:.1f}")
    print(f"The learning gaps summed: {gaps_a:+.1f} → {gaps_b:+.1f}")
    print(f"Gaps of at most 2 points: {ok_a} → {ok_b}")


if __name__ == "__main__":
    main()
