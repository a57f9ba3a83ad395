"""Re-run replays whose figures docs/evaluation publishes and compare them bit for bit.

    .venv/bin/python docs/evaluation/check_figures.py [--envs a,b,...] [--seeds 3] [--jobs 2]

A refactor of the scheduling core must not change a figure. This script is how that is
checked rather than hoped: it replays

* the paper's 24-hour, 162-batch run in the six modes of docs/evaluation/<mode>/ (on
  the real calibration, nautilus-2020-real) and docs/evaluation/paper-spec/<mode>/ (on
  the paper's, nautilus-2020): ``summary`` and every per-batch row of each
  ``report.json``, and
* cells of the 19-environment sweep (``docs/evaluation/sweep/sweep.json``): every mode
  of the sweep on the chosen environments and seeds,

and compares what comes out with the committed JSON after the same JSON round trip, so a
float matches only if it is the same float. Wall times are not figures and are skipped.
It prints one line per replay and a closing count, and exits 1 on any difference.

``--ignore-spreads`` leaves the predictor's spreads out of the comparison (the per-batch
``*_std_s`` estimates and the ``± x s`` of a selector's reason): a change to how the
spreads are calibrated changes those and, if nothing that decides reads them, nothing
else, which is what the check then shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "docs" / "evaluation"
PAPER_MODES = (
    "selector",
    "selector-mean",
    "duplicator",
    "duplicator-gpu1",
    "duplicator-gpu2",
    "share",
)
#: The folders of the paper runs and the spec each was replayed on.
PAPER_RUNS = {
    "": ROOT / "workload" / "envs" / "nautilus-2020-real.yaml",
    "paper-spec": ROOT / "workload" / "nautilus-2020.yaml",
}
DEFAULT_ENVS = (
    "nautilus-2020-real",
    "nautilus-2020",
    "congested-processing",
    "random-001",
    "random-003",
    "random-004",
)


def _roundtrip(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


TIMINGS = ("decision_cpu_s", "wall_s")
"""Keys that hold the machine's timings, not figures: never compared."""
SPREAD = re.compile(r"± [0-9.]+ s")


def _without_spreads(x: Any) -> Any:
    """``x`` less the predictor's spreads (``--ignore-spreads``): every ``*_std_s`` key,
    and the ``± x s`` of a reason. Nothing that decides reads a spread, so a change to
    the spreads alone changes these and no other figure."""
    if isinstance(x, dict):
        return {
            k: SPREAD.sub("± s", v) if k == "reason" and isinstance(v, str) else _without_spreads(v)
            for k, v in x.items()
            if not str(k).endswith("_std_s")
        }
    if isinstance(x, list):
        return [_without_spreads(v) for v in x]
    return x


def _diff(path: str, new: Any, old: Any, out: list[str], *, strict: bool = True) -> None:
    """Every place where ``new`` and ``old`` differ. ``strict=False`` lets ``new``
    carry keys that ``old`` lacks (the committed reports predate a few estimate fields
    that change no figure)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            if any(str(k).startswith(t) for t in TIMINGS):
                continue
            if k not in old and not strict:
                continue
            if k not in new or k not in old:
                out.append(f"{path}.{k}: {'missing' if k not in new else 'new'}")
            else:
                _diff(f"{path}.{k}", new[k], old[k], out, strict=strict)
    elif isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            out.append(f"{path}: {len(new)} items, was {len(old)}")
        for i, (a, b) in enumerate(zip(new, old, strict=False)):
            _diff(f"{path}[{i}]", a, b, out, strict=strict)
    elif new != old:
        out.append(f"{path}: {new!r}, was {old!r}")


def paper_run(
    folder: str, mode: str, baseline: dict[str, Any] | None, spreads: bool = True
) -> tuple[str, list[str], float, Any]:
    from stoic.replay.runner import ReplayConfig, run_replay
    from stoic.replay.scoring import score

    logging.getLogger("stoic").setLevel(logging.ERROR)
    t = time.perf_counter()
    cfg = ReplayConfig(env_path=PAPER_RUNS[folder], batches=162, mode=mode, seed=0)
    new = _roundtrip(score(run_replay(cfg)))
    new = {"summary": new["summary"], "batches": new["batches"]}
    name = f"paper {folder + '/' if folder else ''}{mode}"
    diffs: list[str] = []
    if baseline is not None:
        was = baseline.get(name)
    else:
        old = json.loads((EVAL / folder / mode / "report.json").read_text())
        was = {"summary": old["summary"], "batches": old["batches"]}
    if not spreads:
        new, was = _without_spreads(new), _without_spreads(was)
    # A metric or detail added since the baseline is no changed figure (strict=False).
    _diff("", new, was, diffs, strict=False)
    return name, diffs, time.perf_counter() - t, new


def sweep_cell(
    old: dict[str, Any], env_path: str, baseline: dict[str, Any] | None, spreads: bool = True
) -> tuple[str, list[str], float, Any]:
    from stoic.replay.sweep import Cell, run_cell

    logging.getLogger("stoic").setLevel(logging.ERROR)
    cell = Cell(old["env"], ROOT / env_path, old["mode"], old["seed"], days=3)
    res = run_cell(cell)
    name = f"sweep {old['env']} {old['mode']} seed {old['seed']}"
    new = {"metrics": _roundtrip(res.metrics), "details": _roundtrip(res.details)}
    diffs: list[str] = []
    if res.error:
        diffs.append(f"error: {res.error}")
    was = {"metrics": old["metrics"], "details": old["details"]}
    was = baseline.get(name) if baseline is not None else was
    if not spreads:
        new, was = _without_spreads(new), _without_spreads(was)
    # A metric or detail added since the baseline is no changed figure (strict=False).
    _diff("", new, was, diffs, strict=False)
    return name, diffs, res.wall_s, new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", default=",".join(DEFAULT_ENVS), help="sweep environments")
    ap.add_argument("--seeds", type=int, default=3, help="sweep seeds 0..N-1")
    ap.add_argument("--modes", default="", help="sweep modes (default: all of the sweep's)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-paper", action="store_true", help="skip the paper runs")
    ap.add_argument("--save", type=Path, help="also write every figure to this JSON file")
    ap.add_argument(
        "--against", type=Path, help="compare with a file --save wrote, not with docs/evaluation"
    )
    ap.add_argument(
        "--ignore-spreads",
        action="store_true",
        help="do not compare the predictor's spreads (*_std_s, the '± x s' of a reason)",
    )
    args = ap.parse_args()
    spreads = not args.ignore_spreads
    baseline = json.loads(args.against.read_text()) if args.against else None
    sweep = json.loads((EVAL / "sweep" / "sweep.json").read_text())
    envs = set(args.envs.split(",")) if args.envs else set()
    modes = set(args.modes.split(",")) if args.modes else set(sweep["meta"]["modes"])
    unknown = envs - set(sweep["meta"]["envs"])
    if unknown:
        print(f"check_figures: unknown environment(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    cells = [
        c
        for c in sweep["cells"]
        if c["env"] in envs and c["seed"] < args.seeds and c["mode"] in modes
    ]
    t0 = time.perf_counter()
    failed = 0
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = (
            []
            if args.no_paper
            else [
                pool.submit(paper_run, f, m, baseline, spreads)
                for f in PAPER_RUNS
                for m in PAPER_MODES
            ]
        )
        futures += [
            pool.submit(sweep_cell, c, sweep["meta"]["envs"][c["env"]], baseline, spreads)
            for c in cells
        ]
        saved: dict[str, Any] = {}
        for f in futures:
            name, diffs, wall, figures = f.result()
            saved[name] = figures
            print(f"{'same' if not diffs else 'DIFF'}  {name}  ({wall:.1f} s)")
            for d in diffs[:8]:
                print(f"      {d}")
            failed += bool(diffs)
    if args.save:
        args.save.write_text(json.dumps(saved, indent=0) + "\n")
    n = len(futures)
    print(
        f"{n - failed} of {n} replays bit-for-bit the same, {failed} differ"
        f" ({time.perf_counter() - t0:.0f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
