"""The lower bounds and informed references of the sweep's worlds, from the truth alone:
docs/evaluation/README.md, "Bounds and references".

For every environment and seed, the batches and their truth are drawn exactly as the
sweep's replays draw them (same workload, same audit stream), and four figures are
computed from the truth alone, as % of MIN-LAT (sums over the run):

* **fluid** — the fluid lower bound of every batch (:func:`stoic.replay.bound.
  fluid_lower_bound`: proven; no schedule the replay can run beats it, share's
  included).
* **race** — the race bound (:func:`stoic.replay.bound.race_lower_bound`: proven; no
  schedule that races whole-batch legs beats it: a selector, the duplicator, a race of
  two cloud legs against each other and the edge). Below 100 % by construction: a
  race of legs can beat MIN-LAT (a pod uploading while it deploys), never this.
* **dup-informed** — a duplicator that knew the environment's spec and state
  (``SimEnvironment.expected_duplicates``: the cloud runtime whose race with the edge
  has the least expected latency) *and* made a perfect lagging decision: each batch
  costs min(edge, that runtime's overlapped total), a timeout leaving the edge's. A
  reference *in expectation* (the adaptive duplicator's in-class reference), not a
  bound: a duplicator that picks another pod on a given batch can beat it there.
* **dup-hindsight** — the same with the best cloud runtime of each batch in hindsight:
  the least whole-package race of the edge and one pod with its warm-up; the race
  bound lies below it (no warm-up, uploads pipelined into the calls).

The informed *selector* is a replay mode (``stoic replay sweep --modes informed``) so
that it runs through the requester's fallback; it is not repeated here.

    .venv/bin/python docs/evaluation/bounds.py workload/envs docs/evaluation/sweep/envs \\
        --jobs 2 --out docs/evaluation/sweep/bounds.md
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from stoic.backends.simulated import BatchTruth, load_env
from stoic.errors import StoicError
from stoic.replay.bound import fluid_lower_bound, race_lower_bound
from stoic.replay.runner import ReplayConfig, build_workload
from stoic.replay.sweep import discover_envs
from stoic.settings import Settings
from stoic.values import Job


def _dup_total(truth: BatchTruth, cloud: str, edge: float) -> float:
    t = truth.runtimes[cloud]
    if not t.attempts or t.attempts[-1] is None:
        return edge
    return min(edge, max(t.transfer_s, t.attempts[-1]) + t.warmup_s + t.processing_s)


def one(path: Path, seed: int, days: int) -> tuple[str, dict[str, float]]:
    settings = Settings()
    runtimes = {r.name: r for r in settings.runtime_list()}
    edges = [n for n, r in runtimes.items() if r.is_edge]
    if not edges:
        raise SystemExit("bounds.py: the settings configure no edge runtime to race against")
    edge = edges[0]
    cfg = ReplayConfig(env_path=path, days=days, seed=seed, settings=settings)
    _, batches = build_workload(cfg)
    env = load_env(path, runtimes.values(), seed=seed, fallback=edge)
    sums = dict.fromkeys(("min_lat", "fluid", "race", "informed", "hindsight"), 0.0)
    for b in batches:
        job = Job("b", b.images, round(b.images * env.spec.uplink.bytes_per_image), "a", "v")
        truth = env.audit(b.index, job, b.at_s)
        edge_s = truth.runtimes[edge].processing_s
        clouds = [n for n in truth.runtimes if n != edge]
        expected = env.expected_duplicates(job, b.at_s)
        pick = min(clouds, key=lambda n: expected[n])
        sums["min_lat"] += min(truth.totals().values())
        sums["fluid"] += fluid_lower_bound(truth)
        sums["race"] += race_lower_bound(truth)
        sums["informed"] += _dup_total(truth, pick, edge_s)
        sums["hindsight"] += min(_dup_total(truth, n, edge_s) for n in clouds)
    return env.spec.name, {k: 100 * v / sums["min_lat"] for k, v in sums.items() if k != "min_lat"}


COLUMNS = ("fluid", "race", "informed", "hindsight")
HEADS = ("fluid (bound)", "race (bound)", "dup-informed (reference)", "dup-hindsight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("envs", nargs="+", type=Path, help="spec files or directories of them")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the table here (Markdown)")
    args = ap.parse_args()
    try:
        files = [e.path for e in discover_envs(args.envs)]
    except StoicError as exc:
        raise SystemExit(f"bounds.py: {exc}") from None
    jobs = [(f, s) for f in files for s in range(args.seeds)]
    try:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(one, *zip(*jobs, strict=True), [args.days] * len(jobs)))
    except StoicError as exc:  # a bad spec: one line, no traceback
        raise SystemExit(f"bounds.py: {exc}") from None
    by_env: dict[str, list[dict[str, float]]] = {}
    for name, figures in results:
        by_env.setdefault(name, []).append(figures)
    command = "python docs/evaluation/bounds.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    lines = [
        "# Bounds and references of the sweep's worlds",
        "",
        f"Made with `{command}` (seeds 0–{args.seeds - 1}, {args.days} days; % of MIN-LAT, "
        "means over seeds; docs/evaluation/bounds.py says how each is made). *fluid* and "
        "*race* are proven lower bounds (stoic/replay/bound.py); *dup-informed* is a "
        "reference in expectation, not a bound.",
        "",
        "| environment | " + " | ".join(HEADS) + " |",
        "|---|" + "---|" * len(HEADS),
    ]
    for name, rows in by_env.items():
        cells = [float(np.mean([r[k] for r in rows])) for k in COLUMNS]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c:.1f}" if math.isfinite(c) else "–" for c in cells)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
