"""The table of docs/evaluation/README.md, "The actions on, over every environment".

    python docs/evaluation/actions-all/tables.py docs/evaluation/actions-all

reads the ``sweep.json`` of each environment's sweep under the folder given (one sweep
per environment, made by ``run.sh`` beside this file) and prints, per environment, the
selector with the deploy deadline and the pipelined upload against its informed
reference of the same actions (the learning gap, seed by seed, ± its standard error),
the duplicator with its race deadline against the informed duplicator, share against
the fluid bound, and the paper's selector of the committed sweep
(``docs/evaluation/sweep/sweep.json``, the same seeds) where it has the environment.
The statistics are the sweep's own (``learning_gaps`` in ``sweep.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean
from typing import Any

SELECTOR = "selector+deadline+pipelined"
INFORMED = "informed+deadline+pipelined"
DUPLICATOR = "duplicator+deadline"
SHARE = "share"
COMMITTED = Path(__file__).resolve().parents[1] / "sweep" / "sweep.json"


def _metric(cells: list[dict[str, Any]], mode: str, name: str) -> float:
    return mean(c["metrics"][name] for c in cells if c["mode"] == mode and not c["error"])


def _gap(sweep: dict[str, Any], mode: str) -> str:
    g = next(g for g in sweep["learning_gaps"] if g["mode"] == mode)
    return f"{100 * g['mean']:+.1f} ± {100 * g['se']:.1f}"


def _order(path: Path) -> tuple[bool, bool, str]:
    """The committed sweep's order: the real calibration, the family, the random ones."""
    name = path.parent.name
    return (name != "nautilus-2020-real", name.startswith("random-"), name)


def main() -> None:
    folder = Path(sys.argv[1])
    paper = json.loads(COMMITTED.read_text())["cells"]
    rows, n = [], 0
    sel_ok = dup_ok = share_ok = target_ok = targeted = 0
    for path in sorted(folder.glob("*/sweep.json"), key=_order):
        sweep = json.loads(path.read_text())
        cells = sweep["cells"]
        env = cells[0]["env"]
        n += 1
        sel = 100 * _metric(cells, SELECTOR, "vs_min_lat")
        inf = 100 * _metric(cells, INFORMED, "vs_min_lat")
        dup = 100 * _metric(cells, DUPLICATOR, "vs_min_lat")
        fluid = 100 * _metric(cells, SHARE, "vs_fluid")
        gaps = {g["mode"]: 100 * g["mean"] for g in sweep["learning_gaps"]}
        sel_ok += gaps[SELECTOR] <= 2.0
        dup_ok += gaps[DUPLICATOR] <= 2.0
        share_ok += fluid <= 110.0
        if inf <= 103.0:
            targeted += 1
            target_ok += sel <= 105.0
        probes = _metric(cells, SELECTOR, "probe_cloud_s") / _metric(
            cells, SELECTOR, "cloud_used_s"
        )
        old_sel = [
            c["metrics"]["vs_min_lat"]
            for c in paper
            if c["env"] == env and c["mode"] == "selector" and not c["error"]
        ]
        was = f"{100 * mean(old_sel):.1f}" if old_sel else "–"
        rows.append(
            f"| {env} | {was} | {sel:.1f} | {inf:.1f} | {_gap(sweep, SELECTOR)} | "
            f"{dup:.1f} | {_gap(sweep, DUPLICATOR)} | {fluid:.1f} | {100 * probes:.0f} % |"
        )
    print(
        "| environment | selector, paper's actions (committed sweep) | selector+deadline+pipelined "
        "| informed+deadline+pipelined | selector's learning gap (points) | duplicator+deadline "
        "| duplicator's learning gap (points, vs the informed duplicator) | share, % of fluid "
        "bound | selector's probe cloud s ÷ batch cloud s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(
        f"Of {n} environments: the selector's learning gap ≤ 2 points on {sel_ok}; the "
        f"selector ≤ 105 % of MIN-LAT on {target_ok} of the {targeted} where its informed "
        f"reference is ≤ 103 %; the duplicator's learning gap ≤ 2 points on {dup_ok}; "
        f"share ≤ 110 % of the fluid bound on {share_ok}."
    )


if __name__ == "__main__":
    main()
