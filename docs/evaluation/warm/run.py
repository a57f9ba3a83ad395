"""Warm pods on vs off in the replay: the figures of docs/scheduling.md, "Warm pods".

    PYTHONPATH=. nice -n 10 .venv/bin/python docs/evaluation/warm/run.py [--seeds 3] [--days 3]
        [--price 0.02] [--fixed SECONDS] [--only-on] [--envs a,b] [--modes m,n] [--out warm.json]

Replays the selector and the adaptive duplicator (``duplicator``, auto) with
``keepalive.enabled`` off and on, on nautilus-2020-real, random-002, random-004 and
``bursty`` (nautilus-2020-real with the workload of ``bursty.yaml``), seeds 0..N-1, N
days of 162 batches each, one process. ``--price`` is ``keepalive.price_s_per_pod_s``,
``--fixed`` replaces the predicted keep-alive by a fixed one (``keepalive.fixed_s``,
Knative's way), ``--only-on`` skips the replays with warm pods off. Writes ``--out``
(default ``warm.json`` beside this file) and prints the Markdown table (means over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from stoic.replay.runner import ReplayConfig, run_replay
from stoic.replay.scoring import score
from stoic.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
REAL = ROOT / "workload" / "envs" / "nautilus-2020-real.yaml"
ENVS: dict[str, tuple[Path, Path | None]] = {
    "nautilus-2020-real": (REAL, None),
    "random-002": (ROOT / "docs/evaluation/sweep/envs/random-002.yaml", None),
    "random-004": (ROOT / "docs/evaluation/sweep/envs/random-004.yaml", None),
    "bursty": (REAL, HERE / "bursty.yaml"),
}
MODES = ("selector", "duplicator")


def one(
    env: str, mode: str, seed: int, days: int, warm: bool, price: float, fixed: float | None
) -> dict[str, Any]:
    path, profile = ENVS[env]
    keep = {"enabled": warm, "price_s_per_pod_s": price, "fixed_s": fixed}
    settings = Settings(keepalive=keep)
    extra = {"profile": profile} if profile is not None else {}
    cfg = ReplayConfig(env_path=path, mode=mode, days=days, seed=seed, settings=settings, **extra)
    result = run_replay(cfg)
    s = score(result)["summary"]
    pool = result.core.legs.warm_pods
    return {
        "env": env,
        "mode": mode,
        "seed": seed,
        "warm": warm,
        "vs_min_lat": s["vs_min_lat"],
        "mean_latency_s": s["mean_latency_s"],
        "pod_s_batches": s["pod_s_batches"],
        "pod_s_warm": s.get("pod_s_warm", 0.0),
        "pod_s_learning": s["pod_s_learning"],
        "kept": pool.kept if pool else 0,
        "reused": pool.reused if pool else 0,
        "batches": s["batches"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| env | mode | warm | % of MIN-LAT | mean latency (s) | pod-s batches | pod-s warm "
        "| reused / kept |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = sorted(
        {(r["env"], r["mode"], r["warm"]) for r in rows},
        key=lambda k: (list(ENVS).index(k[0]), k[1], k[2]),
    )
    for env, mode, warm in keys:
        rs = [r for r in rows if (r["env"], r["mode"], r["warm"]) == (env, mode, warm)]
        n = len(rs)

        def mean(k: str, rs: list[dict[str, Any]] = rs, n: int = n) -> float:
            return sum(float(r[k]) for r in rs) / n

        out.append(
            f"| {env} | {mode} | {'on' if warm else 'off'} | {100 * mean('vs_min_lat'):.1f} "
            f"| {mean('mean_latency_s'):.1f} | {mean('pod_s_batches'):,.0f} "
            f"| {mean('pod_s_warm'):,.0f} | {mean('reused'):.0f} / {mean('kept'):.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--price", type=float, default=Settings().keepalive.price_s_per_pod_s)
    ap.add_argument("--fixed", type=float, default=None)
    ap.add_argument("--only-on", action="store_true")
    ap.add_argument("--envs", default=",".join(ENVS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", type=Path, default=HERE / "warm.json")
    args = ap.parse_args()
    logging.getLogger("stoic").setLevel(logging.ERROR)
    rows = []
    t0 = time.perf_counter()
    for env in args.envs.split(","):
        for mode in args.modes.split(","):
            for seed in range(args.seeds):
                for warm in (True,) if args.only_on else (False, True):
                    rows.append(one(env, mode, seed, args.days, warm, args.price, args.fixed))
                    print(f"{env} {mode} seed {seed} warm={warm} done", flush=True)
    meta = {
        "seeds": args.seeds,
        "days": args.days,
        "price_s_per_pod_s": args.price,
        "fixed_s": args.fixed,
        "wall_s": time.perf_counter() - t0,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
