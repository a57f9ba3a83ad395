"""Where a learning gap is, by hour of the day: replays ``informed`` and ``selector`` over
the same worlds and sums, per hour, each batch's latency under the selector minus under
the informed selector, in points of the days' MIN-LAT, split by what the two chose:
the same runtime, the selector the edge and the informed mode not, the informed mode
the edge and the selector not, or two different cloud runtimes. The settings are the
environment's ``STOIC_PREDICTOR__*``, as in a sweep. docs/predictor.md, "Every regime
option together".

    PYTHONPATH=. .venv/bin/python docs/evaluation/predictor/regimes-all/by_hour.py \\
        workload/envs/edge-afternoon-spell.yaml --seeds 6 [--days 3]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from stoic.replay.runner import ReplayConfig, ReplayResult, run_replay
from stoic.settings import Settings

KINDS = ("same", "selector edge", "informed edge", "other cloud")


def kind(selector: str, informed: str) -> str:
    if selector == informed:
        return "same"
    if selector == "edge":
        return "selector edge"
    return "informed edge" if informed == "edge" else "other cloud"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("env", type=Path)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--days", type=int, default=3)
    args = ap.parse_args()
    diff: dict[tuple[str, int], float] = defaultdict(float)
    count: dict[tuple[str, int], int] = defaultdict(int)
    minlat = 0.0
    for seed in range(args.seeds):

        def run(mode: str, seed: int = seed) -> ReplayResult:
            config = ReplayConfig(
                env_path=args.env, mode=mode, days=args.days, seed=seed, settings=Settings()
            )
            return run_replay(config)

        informed, selector = run("informed"), run("selector")
        by_index = {r.batch.index: r for r in informed.records}
        minlat += sum(min(r.truth.totals().values()) for r in selector.records)
        for rec in selector.records:
            other = by_index.get(rec.batch.index)
            if other is None:
                continue
            key = (kind(rec.plan.chosen, other.plan.chosen), int(rec.batch.at_s % 86_400 // 3600))
            diff[key] += rec.outcome.total_s - other.outcome.total_s
            count[key] += 1
    print("hour " + " ".join(f"{k:>20s}" for k in KINDS) + "    total")
    for hour in range(24):
        cells = [f"{100 * diff[(k, hour)] / minlat:+7.2f} ({count[(k, hour)]:4d})" for k in KINDS]
        total = sum(diff[(k, hour)] for k in KINDS)
        row = " ".join(f"{c:>20s}" for c in cells)
        print(f"{hour:4d} {row}  {100 * total / minlat:+7.2f}")
    for k in KINDS:
        points = 100 * sum(v for (kk, _), v in diff.items() if kk == k) / minlat
        print(f"{k}: {points:+.2f} points")


if __name__ == "__main__":
    main()
