"""Which runtime's T_p error makes the selector's learning gap, for which batches.

Replays ``--env`` in ``informed`` mode and in ``selector`` mode over the same worlds
(the settings are the environment's ``STOIC_PREDICTOR__*``, as in a sweep) and prices
every runtime from the spec at each selector batch (``tail_gap.true_components``). The
expected gap is the selector's expected regret minus the informed mode's, in points of
the days' MIN-LAT. Each batch is then re-decided with the T_p of one runtime (or of
all) replaced by the spec's: what that runtime's T_p error costs. That cost is split by
the hour of the day and by whether the batch was larger than any in the runtime's
window (``Estimate.processing_seen``: the line extrapolated). docs/predictor.md,
"Where random-001's learning gap comes from".

    PYTHONPATH=. .venv/bin/python docs/evaluation/processing_gap.py \\
        --env docs/evaluation/sweep/envs/random-001.yaml --days 3 --seeds 6 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from tail_gap import true_components, true_totals

from stoic.replay.runner import ReplayConfig, run_replay
from stoic.schedule.decide.policy import select_min
from stoic.settings import Settings
from stoic.values import Component, Estimate


def with_true_tp(
    estimates: Mapping[str, Estimate], truth: Mapping[str, Mapping[str, float]], names: set[str]
) -> dict[str, Estimate]:
    """``estimates`` with the T_p of ``names`` the spec's (its congestion included)."""
    out = dict(estimates)
    for name in names & set(estimates):
        e = estimates[name]
        out[name] = replace(
            e,
            processing=Component(truth[name]["t_p"], e.processing.std),
            risk=replace(e.risk, processing_excess=0.0),
        )
    return out


def analyse(env: Path, seed: int, days: int, draws: int) -> dict[str, Any]:
    settings = Settings()

    def run(mode: str) -> Any:
        return run_replay(
            ReplayConfig(env_path=env, mode=mode, days=days, seed=seed, settings=settings)
        )

    inf, sel = run("informed"), run("selector")
    by_index = {r.batch.index: r for r in inf.records}
    minlat = sum(min(r.truth.totals().values()) for r in sel.records)
    names = sorted(sel.env.runtimes)
    regret: dict[str, float] = defaultdict(float)
    split: dict[str, float] = defaultdict(float)
    ratios: dict[str, list[float]] = defaultdict(list)
    for rec in sel.records:
        other = by_index.get(rec.batch.index)
        n, at = rec.batch.images, rec.batch.at_s
        nb = round(n * sel.env.spec.uplink.bytes_per_image)
        truth = {k: true_components(sel, k, n, nb, at, draws) for k in rec.plan.estimates}
        expected = true_totals(truth, sel.env.timeout_s)
        if other is None or other.plan.chosen not in expected:
            continue
        best = min(expected.values())
        regret["informed"] += expected[other.plan.chosen] - best
        regret["selector"] += expected[rec.plan.chosen] - best
        for label, which in [("all", set(names))] + [(k, {k}) for k in names]:
            choice = select_min(
                with_true_tp(rec.plan.estimates, truth, which), edge="edge", objective="expected"
            )
            regret[label] += expected[choice] - best
            if label in rec.plan.estimates and label != "all":
                e = rec.plan.estimates[label]
                worth = expected[rec.plan.chosen] - expected[choice]
                beyond = "beyond" if n > e.processing_seen else "within"
                split[f"{label} {beyond}"] += worth
                split[f"{label} hour {int(at % 86_400 // 3600):02d}"] += worth
                pred = e.processing.mean * (1.0 + e.risk.processing_excess)
                if pred > 0:
                    ratios[f"{label} {beyond}"].append(math.log(pred / truth[label]["t_p"]))
    points = {k: 100 * v / minlat for k, v in regret.items()}
    lat_sel = sum(r.outcome.total_s for r in sel.records)
    lat_inf = sum(r.outcome.total_s for r in inf.records)
    return {
        "seed": seed,
        "gap_points": 100 * (lat_sel - lat_inf) / minlat,
        "expected_gap_points": points["selector"] - points["informed"],
        "with_true_tp": {
            k: points[k] - points["informed"] for k in points if k not in ("selector", "informed")
        },
        "worth_points": {k: 100 * v / minlat for k, v in split.items()},
        "mean_abs_log_error": {k: float(np.mean(np.abs(v))) for k, v in ratios.items()},
        "batches": {k: len(v) for k, v in ratios.items()},
    }


HOURS = ((0, 6), (7, 13), (14, 19), (20, 23))
"""The hours the worth is summed over: random-001's GPU1 regime runs 20:30-07:00."""


def _mean_se(values: list[float]) -> str:
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return f"{np.mean(values):+.2f} ± {se:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--env", type=Path, required=True)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        out.append(analyse(args.env, seed, args.days, args.draws))
        print(
            f"seed {seed}: gap {out[-1]['gap_points']:+.2f} "
            f"expected {out[-1]['expected_gap_points']:+.2f}",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    print("realised gap", _mean_se([s["gap_points"] for s in out]))
    print("expected gap", _mean_se([s["expected_gap_points"] for s in out]))
    for key in out[0]["with_true_tp"]:
        print(f"  T_p of {key} true:", _mean_se([s["with_true_tp"][key] for s in out]))
    for name in sorted({k.split()[0] for s in out for k in s["worth_points"]}):

        def worth(keys: list[str]) -> str:
            return _mean_se([sum(s["worth_points"].get(k, 0.0) for k in keys) for s in out])

        parts = [f"{name}: worth within the window's sizes {worth([f'{name} within'])}"]
        parts.append(f"beyond {worth([f'{name} beyond'])}")
        for where in ("within", "beyond"):
            err = [
                s["mean_abs_log_error"][f"{name} {where}"]
                for s in out
                if f"{name} {where}" in s["mean_abs_log_error"]
            ]
            if err:
                parts.append(f"|log error| {where} {np.mean(err):.2f}")
        for lo, hi in HOURS:
            parts.append(
                f"{lo:02d}-{hi:02d}h {worth([f'{name} hour {h:02d}' for h in range(lo, hi + 1)])}"
            )
        print("  " + "; ".join(parts))


if __name__ == "__main__":
    main()
