"""The tables of docs/predictor.md, "Every regime option together", from sweep reports:
each environment's selector and informed % of MIN-LAT, the learning gap (selector −
informed, seed by seed) and the paired change of the selector, mean ± standard error.

    python docs/evaluation/predictor/regimes-all/compare.py BEFORE AFTER

BEFORE and AFTER are folders holding a sweep.json; only the seeds both hold are paired.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(folder: str) -> dict[tuple[str, str], dict[int, float]]:
    cells = json.loads((Path(folder) / "sweep.json").read_text())["cells"]
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for c in cells:
        if c["mode"] in ("selector", "informed") and not c["error"]:
            out[(c["env"], c["mode"])][c["seed"]] = 100 * c["metrics"]["vs_min_lat"]
    return out


def mean_se(xs: list[float]) -> str:
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.1f} ± {se:.1f}"


def main() -> None:
    a, b = load(sys.argv[1]), load(sys.argv[2])
    print("| environment | seeds | selector | informed | gap before | gap after | paired |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total_a = total_b = 0.0
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
        print(
            f"| {env} | {len(seeds)} | {statistics.mean(sa):.1f} → {statistics.mean(sb):.1f} "
            f"| {ia:.1f} → {ib:.1f} | {mean_se(ga)} | {mean_se(gb)} "
            f"| {mean_se([y - x for x, y in zip(sa, sb, strict=True)])} |"
        )
    print(f"\nThe selector summed: {total_a:.1f} → {total_b:.1f}")


if __name__ == "__main__":
    main()
