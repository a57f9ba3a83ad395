"""Share's sensitivity to the costs the simulator prices (issue 22 §4): replays share,
the selector and the duplicator on each environment as specified and under each
scenario of :mod:`stoic.replay.sensitivity`, and writes ``sensitivity.md`` and
``sensitivity.json`` (and the sweep's own report, ``sweep/``) into ``--out``.

    .venv/bin/python docs/evaluation/sensitivity.py --seeds 5 --days 3 --jobs 2 \\
        --out docs/evaluation/sensitivity

Default environments: the real calibration (nautilus-2020-real), the paper's
(nautilus-2020) and three that stress what the scenarios change (contended-cloud: a
busy cluster; leo-satellite: outages; rural-lte: a slow link).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from stoic.replay.sensitivity import DEFAULT_MODES, run_sensitivity, write_sensitivity
from stoic.replay.sweep_report import write_sweep_report

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "workload" / "envs"
DEFAULT_ENVS = (
    "nautilus-2020-real",
    "nautilus-2020",
    "contended-cloud",
    "leo-satellite",
    "rural-lte",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--envs", default=",".join(DEFAULT_ENVS), help="names in workload/envs or paths"
    )
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES))
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    envs = [
        Path(e) if e.endswith((".yaml", ".yml")) else ENVS / f"{e}.yaml"
        for e in args.envs.split(",")
    ]
    missing = [str(e) for e in envs if not e.is_file()]
    if missing:
        print(f"sensitivity: no such spec: {', '.join(missing)}", file=sys.stderr)
        return 2
    logging.getLogger("stoic").setLevel(logging.ERROR)
    result = run_sensitivity(
        envs,
        args.out,
        modes=args.modes.split(","),
        seeds=range(args.seeds),
        days=args.days,
        jobs=args.jobs,
    )
    command = "python docs/evaluation/sensitivity.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    write_sweep_report(result, args.out / "sweep", command=command)
    print(write_sensitivity(result, args.out, command=command))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
