"""Pool the learning gaps of several sweeps over the same cells and different seeds.

``.venv/bin/python docs/evaluation/pool_seeds.py SWEEP.json [SWEEP.json ...]``

A gap's standard error falls as 1/√seeds; where five seeds leave it over a point
(``seeds_for_se_below_target`` in ``sweep.json``), a second sweep of the same
environments and modes over further seeds (``--first-seed 5``) is pooled with the first
here, seed by seed, and the table printed is the one docs/evaluation/README.md quotes.
The sweeps must not share a seed (the command of each says which it ran); the
statistics are :class:`stoic.replay.sweep.Gap`'s own, so a pooled gap is computed
exactly as a sweep of all the seeds at once would compute it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stoic.replay.sweep import Gap
from stoic.replay.sweep_report import gap_cell


def pooled(paths: list[Path]) -> list[Gap]:
    """The gaps of every (environment, mode) that a sweep after the first ran (all of the
    first's when it is alone), with the seeds of every sweep."""
    seeds: dict[tuple[str, str], list[float]] = {}
    meta: dict[tuple[str, str], tuple[str, bool]] = {}
    for path in paths:
        for g in json.loads(path.read_text())["learning_gaps"]:
            key = (g["env"], g["mode"])
            seeds.setdefault(key, []).extend(g["per_seed"])
            meta[key] = (g["reference"], g["bound"])
    later = [
        g for path in paths[1:] or paths for g in json.loads(path.read_text())["learning_gaps"]
    ]
    keys = list(dict.fromkeys((g["env"], g["mode"]) for g in later))
    return [Gap(e, m, meta[(e, m)][0], meta[(e, m)][1], tuple(seeds[(e, m)])) for e, m in keys]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: pool_seeds.py SWEEP.json [SWEEP.json ...]")
    gaps = pooled([Path(p) for p in sys.argv[1:]])
    modes = list(dict.fromkeys(g.mode for g in gaps))
    envs = list(dict.fromkeys(g.env for g in gaps))
    by = {(g.env, g.mode): g for g in gaps}
    print("| environment | seeds (" + " / ".join(modes) + ") | " + " | ".join(modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    for e in envs:
        n = " / ".join(str(by[(e, m)].n) if (e, m) in by else "–" for m in modes)
        cells = [gap_cell(by[(e, m)]) if (e, m) in by else "–" for m in modes]
        print(f"| {e} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
