"""The probe ledger's table (docs/scheduling.md, "The probe ledger").

    python docs/evaluation/probe-ledger/tables.py docs/evaluation/probe-ledger/share-25

reads each environment's ``sweep.json`` under the folder given (the selector with the
deploy deadline and the pipelined upload, ``--probe-share``; made by ``run.sh`` beside
this file) and the committed sweep of the same environment
(``docs/evaluation/actions-all/ENV/sweep.json``: the same mode without a ledger, and
its informed reference, which does not learn and so has the same figures with a
ledger), and prints per environment:

* the processing probes' pod-seconds × GPUs held after ready over the batches'
  pod-seconds × GPUs ready to teardown (the committed table's last column), before and
  after: means over the seeds, divided;
* every probe (deployment and processing) and the bootstrap from request to teardown
  over the batches' from request to teardown (``pod_s_learning ÷ pod_s_batches``);
* the learning gap (selector − informed, points of MIN-LAT, seed by seed, ± its
  standard error) before and after, and its change paired by seed.

An environment meets the issue's target when the processing probes' ratio is ≤ 25 %
and the gap grows by at most 0.5 point (the mean of the paired change).
"""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any

SELECTOR = "selector+deadline+pipelined"
INFORMED = "informed+deadline+pipelined"
COMMITTED = Path(__file__).resolve().parents[1] / "actions-all"
TARGET_RATIO, TARGET_GROWTH = 0.25, 0.5
# The committed table's order of environments (its tables.py: a script, not a module).
_order = runpy.run_path(str(COMMITTED / "tables.py"))["_order"]


def _cells(path: Path, mode: str) -> dict[int, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return {c["seed"]: c for c in doc["cells"] if c["mode"] == mode and not c["error"]}


def _ratio(cells: list[dict[str, Any]], top: str, bottom: str) -> float:
    def value(c: dict[str, Any], key: str) -> float:
        return float(c["metrics"].get(key) or c["details"].get(key) or 0.0)

    return mean(value(c, top) for c in cells) / mean(value(c, bottom) for c in cells)


def _gap(cell: dict[str, Any], informed: dict[str, Any]) -> float:
    """One seed's learning gap, as the sweep's (``learning_gaps``): % of MIN-LAT minus
    the informed reference's, in the same world."""
    return float(cell["metrics"]["vs_min_lat"] - informed["metrics"]["vs_min_lat"])


def _pm(values: list[float]) -> str:
    se = stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{100 * mean(values):+.1f} ± {100 * se:.1f}"


def main() -> None:
    folder = Path(sys.argv[1])
    rows, met, n = [], 0, 0
    for path in sorted(folder.glob("*/sweep.json"), key=_order):
        env = path.parent.name
        after = _cells(path, SELECTOR)
        before = _cells(COMMITTED / env / "sweep.json", SELECTOR)
        informed = _cells(COMMITTED / env / "sweep.json", INFORMED)
        seeds = sorted(set(after) & set(before) & set(informed))
        if not seeds:
            continue
        n += 1
        b = [before[s] for s in seeds]
        a = [after[s] for s in seeds]
        ratio_b = _ratio(b, "probe_cloud_s", "cloud_used_s")
        ratio_a = _ratio(a, "probe_cloud_s", "cloud_used_s")
        all_b = _ratio(b, "pod_s_learning", "pod_s_batches")
        all_a = _ratio(a, "pod_s_learning", "pod_s_batches")
        gap_b = [_gap(before[s], informed[s]) for s in seeds]
        gap_a = [_gap(after[s], informed[s]) for s in seeds]
        growth = [x - y for x, y in zip(gap_a, gap_b, strict=True)]
        ok = ratio_a <= TARGET_RATIO and mean(growth) <= TARGET_GROWTH / 100
        met += ok
        rows.append(
            f"| {env} | {len(seeds)} | {100 * ratio_b:.1f} % | {100 * ratio_a:.1f} % | "
            f"{all_b:.1f}× | {all_a:.1f}× | {_pm(gap_b)} | {_pm(gap_a)} | {_pm(growth)} | "
            f"{'yes' if ok else 'no'} |"
        )
    print(
        "| environment | seeds | processing probes ÷ batches, before | after | every probe "
        "÷ batches (request to teardown), before | after | learning gap before (points) "
        "| after | change, paired by seed | ratio ≤ 25 % and growth ≤ 0.5 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(f"{met} of {n} environments meet both.")


if __name__ == "__main__":
    main()
