"""Wall time of a full-length replay: every non-empty hour of 1,136 days (the paper's
trace length, about 9,100 batches), selector mode, with the audit, probe shortcut on.

    .venv/bin/python benchmarks/bench_replay.py [--days N] [--profile]

Prints the wall time and where it went (estimate + decide, the rest of the batch path,
the probe shortcut); ``--profile`` adds the top of a cProfile listing (which inflates the
per-sample calls of the probe shortcut; a sampling profiler shows the shares better).

On a shared machine the wall time follows the load: compare two versions at the same
moment, one after the other, each with ``PYTHONPATH=<its tree>``. Figures:
docs/evaluation/README.md, "Full-length benchmark".
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import time

from stoic.replay.runner import ReplayConfig, run_replay
from stoic.replay.scoring import score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=1136)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    logging.getLogger("stoic").setLevel(logging.ERROR)
    cfg = ReplayConfig(mode="selector", hours=24 * args.days, probes="window", seed=0)
    prof = cProfile.Profile() if args.profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    result = run_replay(cfg)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t
    s = score(result)["summary"]
    n = len(result.records)
    print(
        f"days={args.days} batches={n} wall_s={wall:.1f} per_batch_ms={1e3 * wall / max(n, 1):.2f}"
    )
    print(f"success={s['success_rate']:.3f} vs_min_lat={s['vs_min_lat']:.3f}")
    for k, v in result.timings.items():
        print(f"  {k}: {v:.1f} s")
    print(f"  probes: {result.probe_stats}")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
