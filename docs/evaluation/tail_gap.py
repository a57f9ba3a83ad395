"""Where the selector's learning gap comes from, component by component.

Replays ``--env`` in ``informed`` mode once and in ``selector`` mode at each
``--tail-history`` (``predictor.deployment_tail_history``; the same worlds: the batch
truths depend only on the seed), and at every batch of the selector prices each runtime
from the spec at that instant (``--draws`` fresh draws of a private stream: E[T_t],
E[T_d | ready] and its median, P(timeout), E[T_p] with congestion). A pick's expected
regret is its E[T_s] minus the least; the expected gap is the selector's regret minus
the informed mode's, in points of the days' MIN-LAT (the learning gap without the luck
of the draws). Re-deciding each batch with components of every estimate replaced by the
spec's (``SUBSTITUTIONS``) says which error costs what. Also: the realised gap, the mean
absolute error of each cloud runtime's components, and the realised minus the expected
latency of the runtimes chosen (a check of the expectations: they leave out the wait of
a batch behind the one before it and a fallback's own timeouts). docs/predictor.md,
"The deployment tail".

    PYTHONPATH=. .venv/bin/python docs/evaluation/tail_gap.py \
        --env workload/envs/edge-step.yaml --days 6 --seeds 6 --tail-history 0,1440 [--json OUT]

The rest of the settings are the environment's (``STOIC_PREDICTOR__*``), as in a sweep.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from stoic.replay.runner import ReplayConfig, ReplayResult, run_replay
from stoic.schedule.decide.policy import select_min
from stoic.settings import Settings
from stoic.values import Component, Estimate


def true_components(
    result: ReplayResult, runtime: str, n_images: int, n_bytes: int, at_s: float, draws: int
) -> dict[str, float]:
    """The spec's expectation of each component of ``runtime`` at ``at_s``."""
    env = result.env
    rng = np.random.default_rng([int(at_s * 1000) % 2**32, draws])
    at = np.full(draws, at_s)
    p = env.spec.runtimes[runtime].processing
    tp = (p.per_image_s * n_images + p.fixed_s) * env.processing_factors(
        runtime, rng.random((draws, 3)), at_s
    )
    state = env.uplink_state(at_s)
    bps = np.array(env.bandwidths_bps(at_s, rng.random(draws).tolist(), state))
    out = {"t_p": float(tp.mean())}
    if env.runtimes[runtime].is_edge:
        return out | {"t_t": 0.0, "t_d": 0.0, "p_timeout": 0.0}
    dep = env.observed(at, env.deployment_from_uniforms(runtime, at, rng.random((draws, 4))))
    ready = dep[~np.isnan(dep)]
    return out | {
        "t_t": float((n_bytes / bps).mean()),
        "t_d": float(ready.mean()) if ready.size else math.nan,
        "t_d_median": float(np.median(ready)) if ready.size else math.nan,
        "p_timeout": float(np.isnan(dep).mean()),
    }


def predicted_components(e: Estimate) -> dict[str, float]:
    r = e.risk
    return {
        "t_t": e.transfer.mean,
        "t_d_median": e.deployment.mean,
        "t_d": e.deployment.mean + r.deployment_excess_s,
        "excess": r.deployment_excess_s,
        "p_timeout": r.p_timeout,
        "t_p": e.processing.mean * (1.0 + r.processing_excess),
        "n_ready": float(len(r.ready_s)),
    }


SUBSTITUTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "t_t": ("t_t",),
    "t_d_median": ("t_d_median",),
    "excess": ("excess",),
    "t_d": ("t_d_median", "excess"),
    "p_timeout": ("p_timeout",),
    "t_p": ("t_p",),
    "t_d+p_timeout": ("t_d_median", "excess", "p_timeout"),
    "all": ("t_t", "t_d_median", "excess", "p_timeout", "t_p"),
}


def substituted(e: Estimate, t: dict[str, float], parts: tuple[str, ...]) -> Estimate:
    """``e`` with the named components replaced by the spec's expectations ``t``."""
    r = e.risk
    transfer, deployment, processing = e.transfer, e.deployment, e.processing
    if "t_t" in parts and "t_t" in t:
        transfer = Component(t["t_t"], transfer.std)
    if "t_p" in parts:
        processing = Component(t["t_p"], processing.std)
        r = replace(r, processing_excess=0.0)
    if "t_d_median" in parts and "t_d_median" in t:
        deployment = Component(t["t_d_median"], deployment.std)
    if "excess" in parts and "t_d_median" in t:
        r = replace(r, deployment_excess_s=t["t_d"] - t["t_d_median"])
    if "p_timeout" in parts and "p_timeout" in t and t["p_timeout"] == t["p_timeout"]:
        r = replace(r, p_timeout=t["p_timeout"])
    return replace(e, transfer=transfer, deployment=deployment, processing=processing, risk=r)


def true_totals(truth: dict[str, dict[str, float]], timeout_s: float) -> dict[str, float]:
    """E[T_s] of each runtime; a timeout costs the timeout and the best other's."""
    ready = {
        n: t["t_p"] + t.get("t_t", 0.0) + (t["t_d"] if "t_d" in t and t["t_d"] == t["t_d"] else 0.0)
        for n, t in truth.items()
    }
    out = {}
    for n, t in truth.items():
        p = t.get("p_timeout", 0.0)
        after = min((v for m, v in ready.items() if m != n), default=ready[n])
        out[n] = (1 - p) * ready[n] + p * (timeout_s + after)
    return out


def analyse_selector(sel: ReplayResult, inf: ReplayResult, draws: int) -> dict[str, Any]:
    """The selector's gap to the informed run of the same worlds, realised and expected,
    the expected regret with each component replaced by the spec's, and the errors of
    each cloud runtime's components."""
    by_index = {r.batch.index: r for r in inf.records}
    minlat = sum(min(r.truth.totals().values()) for r in sel.records)
    regret: Counter[str] = Counter()
    surprise: Counter[str] = Counter()  # realised minus expected, of the runtime chosen
    pairs: Counter[str] = Counter()
    errors: dict[str, list[dict[str, float]]] = defaultdict(list)
    for rec in sel.records:
        other = by_index.get(rec.batch.index)
        if other is None:
            continue
        a, b = rec.plan.chosen, other.plan.chosen
        n, at = rec.batch.images, rec.batch.at_s
        nb = round(n * sel.env.spec.uplink.bytes_per_image)
        truth = {name: true_components(sel, name, n, nb, at, draws) for name in rec.plan.estimates}
        for name, est in rec.plan.estimates.items():
            t = truth[name]
            if "t_d_median" not in t:
                continue
            pred = predicted_components(est)
            errors[name].append(
                {k: pred[k] - t[k] for k in ("t_d", "t_d_median", "p_timeout", "t_p")}
                | {"excess": pred["excess"] - (t["t_d"] - t["t_d_median"])}
            )
        if a != b:
            pairs[f"{a} over {b}"] += 1
        expected = true_totals(truth, sel.env.timeout_s)
        best = min(expected.values())
        if b in expected:
            regret["informed"] += expected[b] - best
            surprise["informed"] += other.outcome.total_s - expected[b]
        if a in expected:
            surprise["selector"] += rec.outcome.total_s - expected[a]
        for label, parts in SUBSTITUTIONS.items():
            ests = {k: substituted(v, truth[k], parts) for k, v in rec.plan.estimates.items()}
            choice = select_min(ests, edge="edge", objective="expected")
            regret[label] += expected[choice] - best
    lat_sel = sum(r.outcome.total_s for r in sel.records)
    lat_inf = sum(r.outcome.total_s for r in inf.records)
    return {
        "selector_pct": 100 * lat_sel / minlat,
        "informed_pct": 100 * lat_inf / minlat,
        "gap_points": 100 * (lat_sel - lat_inf) / minlat,
        "expected_gap_points": 100 * (regret["none"] - regret["informed"]) / minlat,
        "expected_regret_points": {k: 100 * v / minlat for k, v in regret.items()},
        "realised_minus_expected_points": {k: 100 * v / minlat for k, v in surprise.items()},
        "pairs": dict(pairs),
        "errors": {
            name: {k: float(np.mean([abs(r[k]) for r in rows])) for k in rows[0]}
            for name, rows in errors.items()
        },
    }


def analyse(env: Path, seed: int, days: int, draws: int, histories: list[int]) -> dict[str, Any]:
    """One world: the informed run once, the selector at each tail history."""
    base = Settings()

    def run(mode: str, history: int) -> ReplayResult:
        settings = base.model_copy(
            update={
                "predictor": base.predictor.model_copy(update={"deployment_tail_history": history})
            }
        )
        return run_replay(
            ReplayConfig(env_path=env, mode=mode, days=days, seed=seed, settings=settings)
        )

    inf = run("informed", 0)
    return {
        "env": env.stem,
        "seed": seed,
        "by_tail_history": {h: analyse_selector(run("selector", h), inf, draws) for h in histories},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--env", type=Path, action="append", required=True)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--tail-history", default="0", help="comma-separated, e.g. 0,1440")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    histories = [int(h) for h in args.tail_history.split(",")]
    out = []
    for env in args.env:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            s = analyse(env, seed, args.days, args.draws, histories)
            out.append(s)
            for h, r in s["by_tail_history"].items():
                print(
                    f"{s['env']} seed {seed} tail {h}: selector {r['selector_pct']:.2f} "
                    f"informed {r['informed_pct']:.2f} gap {r['gap_points']:+.2f} "
                    f"expected gap {r['expected_gap_points']:+.2f}",
                    flush=True,
                )
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
