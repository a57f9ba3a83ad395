"""Wall time of the issue's sweep: 7 environments × 6 modes × 5 seeds × 3 days (162
batches a day, full inquisitor probing), in worker processes on every core.

    .venv/bin/python benchmarks/bench_sweep.py [--jobs J] [--report DIR]

The target is under 10 minutes on the 2-core development machine. Prints the wall time,
the mean wall time of one replay inside its worker, and the machine's load average
(other processes share the cores: a loaded machine reads slower).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from stoic.replay.sweep import DEFAULT_MODES, SweepConfig, default_jobs, discover_envs, run_sweep
from stoic.replay.sweep_report import write_sweep_report

ENVS = Path(__file__).resolve().parents[1] / "workload" / "envs"
SEVEN = (
    "nautilus-2020",
    "rural-lte",
    "leo-satellite",
    "pi-edge",
    "fast-cloud",
    "contended-cloud",
    "heavy-tail",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--report", type=Path, default=None)
    args = ap.parse_args()
    envs = discover_envs([ENVS / f"{name}.yaml" for name in SEVEN])
    cfg = SweepConfig(envs=envs, modes=DEFAULT_MODES, seeds=(0, 1, 2, 3, 4), days=3, jobs=args.jobs)
    jobs = args.jobs or default_jobs()
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    result = run_sweep(cfg)
    wall = time.perf_counter() - t
    n = len(result.cells)
    cell = sum(c.wall_s for c in result.cells) / max(n, 1)
    print(
        f"cells={n} (7 envs x 6 modes x 5 seeds x 3 days) jobs={jobs} wall_s={wall:.1f} "
        f"({wall / 60:.1f} min; target < 10 min) per_replay_s={cell:.2f} "
        f"failed={len(result.failed)} load_avg_1min_before={load0:.1f} "
        f"after={os.getloadavg()[0]:.1f}"
    )
    out = args.report or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    write_sweep_report(result, out, command="benchmarks/bench_sweep.py")
    print(f"report in {out}")


if __name__ == "__main__":
    main()
