"""Scoring a replay with the paper's tables (§3.4.4 Table 3, §4.2, §4.3 Tables 4 and 5).

Every figure is computed from the audit (the truth of every runtime for every batch),
the plan (estimates and choice) and the outcome the requester measured:

* **success** — selector and baselines: the chosen runtime's true total is the least
  of all runtimes (ties count as success). Duplicator (the paper's definition): the
  conditional choice at pod-ready (keep the cloud, or keep the edge) is the runtime that
  really finishes first of the two; an edge that finished before the pod was ready is a
  success. The cloud leg of the duplicator uploads and deploys in parallel, so its true
  total is ``max(T_t, T_d) + warm-up + T_p``.
* **aggregate latency** — the sum of measured totals, as % of MIN-LAT (the sum of each
  batch's least true total over *all* runtimes) and of the worst case (the sum of the
  greatest), and of the fluid lower bound (:mod:`stoic.replay.bound`: the sum of each
  batch's least time under any schedule the replay can run, share's included), and of
  the race bound (the sum of each batch's least time under any schedule that races
  whole-batch legs: a selector, the duplicator, a race of two cloud legs).
* **cloud time** (duplicator, Table 5) — saved: the cloud T_p × GPUs not spent because
  the edge was kept; wasted: the pod seconds × GPUs of a cloud leg that lost.
* **PMAE** (Table 3) — MAE of the predicted T_d, T_p and T_s of each cloud runtime
  against its truth, divided by the mean truth, in the first and second half of the run.

And the figures every report leads with (:func:`headline`; docs/replay.md, "Figures"):
mean latency (s); the 95th percentile over batches of latency ÷ the batch's hindsight
best single runtime (its MIN-LAT: a sum hides a few bad batches behind many large
ones); % of MIN-LAT (the paper's); % of the mode's in-class reference
(:mod:`stoic.replay.reference`: the fluid bound for share, the hindsight race for a
fixed duplicator, the informed selector for every single-runtime mode); and cloud pod
seconds × GPUs, probes and the bootstrap included, from each deployment's request to
its teardown (:attr:`~stoic.replay.runner.ReplayResult.pod_s`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from stoic.replay.bound import fluid_lower_bound, race_lower_bound
from stoic.replay.reference import reference
from stoic.replay.runner import ReplayedBatch, ReplayResult
from stoic.values import Mode, RacePlan, SharePlan

SIZE_BINS = ((1, 10), (11, 35), (36, 90), (91, 250), (251, 10**9))


def _bin(n: int) -> str:
    for lo, hi in SIZE_BINS:
        if lo <= n <= hi:
            return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"
    return "0"


def _dup_cloud_total(rec: ReplayedBatch, cloud: str) -> float:
    t = rec.truth.runtimes[cloud]
    if not t.attempts or t.attempts[-1] is None:
        return math.inf
    return max(t.transfer_s, t.attempts[-1]) + t.warmup_s + t.processing_s


def _actions(rec: ReplayedBatch) -> dict[str, Any]:
    """The plan's deploy deadline of the runtime it chose, whether the deployment was
    abandoned at it (the truth's T_d was not ready by then), how many fallback legs the
    requester abandoned at theirs (``policy.deploy_deadline_fallback``) and whether its
    cloud leg uploaded while it deployed."""
    plan = rec.plan
    deadline = plan.deadlines.get(plan.chosen)
    t = rec.truth.runtimes.get(plan.chosen)
    dep = t.attempts[-1] if t is not None and t.attempts else math.nan
    abandoned = deadline is not None and (dep is None or dep >= deadline)
    cloud = t is not None and bool(t.attempts)
    return {
        "deadline_s": deadline,
        "abandoned": abandoned,
        "abandoned_fallback": sum(n != plan.chosen for n in rec.outcome.abandoned),
        "pipelined": plan.pipelined and cloud,
    }


def _actions_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How often the actions were taken (None: never, the paper's selector)."""
    acted = [r["actions"] for r in rows if "actions" in r]
    if not acted:
        return None
    with_deadline = [a["deadline_s"] for a in acted if a["deadline_s"] is not None]
    return {
        "batches_with_deadline": len(with_deadline),
        "mean_deadline_s": sum(with_deadline) / len(with_deadline) if with_deadline else None,
        "abandoned": sum(bool(a["abandoned"]) for a in acted),
        "abandoned_fallback": sum(a["abandoned_fallback"] for a in acted),
        "pipelined": sum(bool(a["pipelined"]) for a in acted),
    }


def batch_row(rec: ReplayedBatch, mode: Mode) -> dict[str, Any]:
    """One batch, flattened for the JSON report."""
    totals = rec.truth.totals()
    best = min(totals, key=lambda n: totals[n])
    out = rec.outcome
    row: dict[str, Any] = {
        "index": rec.batch.index,
        "at_s": round(rec.batch.at_s, 3),
        "hour": rec.batch.hour,
        "images": rec.batch.images,
        "n_bytes": rec.batch.n_bytes,
        "started_s": round(rec.started_s, 3),
        "planned": rec.plan.chosen,
        "ran_on": out.runtime,
        "reason": rec.plan.reason,
        "outcome_reason": out.reason,
        "fell_back": out.fell_back,
        "latency_s": out.total_s,
        "measured": {
            "transfer_s": out.transfer_s,
            "deployment_s": out.deployment_s,
            "warmup_s": out.warmup_s,
            "processing_s": out.processing_s,
        },
        "cloud_used_s": out.cloud_used_s,
        "cloud_wasted_s": out.cloud_wasted_s,
        "cloud_by": {k: list(v) for k, v in out.cloud_by.items()},
        "decision_cpu_s": out.decision_s,
        "fluid_s": fluid_lower_bound(rec.truth),
        "race_s": race_lower_bound(rec.truth),
        "estimates": {n: e.as_dict() for n, e in rec.plan.estimates.items()},
        "truth": {
            n: {
                "transfer_s": t.transfer_s,
                "deployment_s": None if math.isnan(t.deployment_s) else t.deployment_s,
                "deploy_timeout": bool(t.attempts and t.attempts[-1] is None),
                "processing_s": t.processing_s,
                "total_s": t.total_s,
            }
            for n, t in rec.truth.runtimes.items()
        },
        "best": best,
        "min_lat_s": totals[best],
        "worst_s": max(totals.values()),
    }
    plan = rec.plan
    if plan.deadlines or plan.pipelined:  # the actions beyond the paper's, where taken
        row["actions"] = _actions(rec)
    if mode is Mode.DUPLICATOR and isinstance(plan, RacePlan):
        cloud, edge = plan.cloud, plan.edge  # the cloud fixed, or chosen for this batch (auto)
        e_total, c_total = totals[edge], _dup_cloud_total(rec, cloud)
        chosen = cloud if out.kept_cloud else edge
        truth_winner = cloud if c_total < e_total else edge
        row.update(
            kept_cloud=out.kept_cloud,
            chosen=chosen,
            dup_truth={"edge_s": e_total, "cloud_s": None if math.isinf(c_total) else c_total},
            success=chosen == truth_winner,
        )
    elif mode is Mode.SHARE and isinstance(plan, SharePlan):
        # No single runtime was chosen: right when the shared batch beat the best one.
        row.update(
            chosen="share",
            shares=dict(out.shares),
            share_clouds=list(plan.clouds),
            duplicate_images=out.duplicate_images,
            success=out.total_s <= totals[best] * (1 + 1e-9) + 1e-9,
        )
    else:
        chosen = plan.chosen
        row.update(chosen=chosen, success=totals[chosen] <= totals[best] * (1 + 1e-9) + 1e-9)
    return row


def _pmae(pred: list[float], true: list[float]) -> float | None:
    if not true:
        return None
    p, t = np.asarray(pred), np.asarray(true)
    mean = float(np.mean(t))
    return float(np.mean(np.abs(p - t)) / mean) if mean > 0 else None


def pmae_table(rows: list[dict[str, Any]], runtimes: list[str]) -> dict[str, Any]:
    """Table 3 per cloud runtime and pooled: PMAE of T_d, T_p, T_s by half."""
    half = len(rows) // 2
    halves = {"first": rows[:half], "second": rows[half:]}
    out: dict[str, Any] = {}
    for name in [*runtimes, "all-cloud"]:
        names = runtimes if name == "all-cloud" else [name]
        out[name] = {}
        for h, part in halves.items():
            acc: dict[str, tuple[list[float], list[float]]] = {
                k: ([], []) for k in ("deployment", "processing", "total")
            }
            for r in part:
                for n in names:
                    est, tr = r["estimates"].get(n), r["truth"][n]
                    if est is None or tr["deploy_timeout"]:
                        continue
                    acc["deployment"][0].append(est["deployment_s"])
                    acc["deployment"][1].append(tr["deployment_s"])
                    acc["processing"][0].append(est["processing_s"])
                    acc["processing"][1].append(tr["processing_s"])
                    acc["total"][0].append(est["total_s"])
                    acc["total"][1].append(tr["total_s"])
            out[name][h] = {k: _pmae(*v) for k, v in acc.items()}
    return out


P95 = 95.0


def headline(rows: list[dict[str, Any]], pod_s: Mapping[str, float]) -> dict[str, Any]:
    """The figures a report leads with, from its rows (``latency_s``, ``min_lat_s``,
    ``class_ref_s`` per batch) and its pod seconds × GPUs per kind (``batch``,
    ``learning``). A ratio whose denominator is not a positive finite number is None."""
    n = len(rows)
    lat = math.fsum(r["latency_s"] for r in rows)
    ref = math.fsum(r["class_ref_s"] for r in rows)
    per_batch = [
        r["latency_s"] / r["min_lat_s"]
        for r in rows
        if r["min_lat_s"] > 0 and math.isfinite(r["min_lat_s"])
    ]
    batch, learning = pod_s.get("batch", 0.0), pod_s.get("learning", 0.0)
    out = {
        "mean_latency_s": lat / n if n else None,
        "p95_vs_best": float(np.percentile(per_batch, P95)) if per_batch else None,
        "vs_class": lat / ref if ref > 0 and math.isfinite(ref) else None,
        "pod_s": batch + learning,
        "pod_s_batches": batch,
        "pod_s_learning": learning,
    }
    if "warm" in pod_s:  # warm pods (keepalive.enabled): their idle seconds count too
        out["pod_s"] = batch + learning + pod_s["warm"]
        out["pod_s_warm"] = pod_s["warm"]
    return out


def pod_seconds(result: ReplayResult) -> dict[str, float]:
    """The replay's pod seconds × GPUs (a CPU pod counts 1) per kind."""
    gpus = {r.name: max(r.gpus, 1) for r in result.env.runtimes.values()}
    return {
        kind: math.fsum(s * gpus.get(name, 1) for name, s in by.items())
        for kind, by in result.pod_s.items()
    }


def score(result: ReplayResult) -> dict[str, Any]:
    """Every figure of the report (the JSON's ``summary``) plus the per-batch rows."""
    rows = [batch_row(r, result.mode) for r in result.records]
    ref = reference(result)
    for row, seconds in zip(rows, ref.per_batch, strict=True):
        row["class_ref_s"] = seconds
    n = len(rows)
    lat = float(sum(r["latency_s"] for r in rows))
    min_lat = float(sum(r["min_lat_s"] for r in rows))
    fluid = float(sum(r["fluid_s"] for r in rows))
    race = float(sum(r["race_s"] for r in rows))
    worst = float(sum(r["worst_s"] for r in rows))
    succ = sum(bool(r["success"]) for r in rows)
    gpus = {r.name: max(r.gpus, 1) for r in result.env.runtimes.values()}
    clouds = [r.name for r in result.env.runtimes.values() if not r.is_edge]
    by_size: dict[str, dict[str, int]] = {}
    for r in rows:
        b = by_size.setdefault(_bin(r["images"]), {"batches": 0, "wrong": 0})
        b["batches"] += 1
        b["wrong"] += not r["success"]
    summary: dict[str, Any] = {
        **headline(rows, pod_seconds(result)),
        "class_ref": {"name": ref.name, "bound": ref.bound},
        "batches": n,
        "success": succ,
        "success_rate": succ / n if n else None,
        "latency_s": lat,
        "min_lat_s": min_lat,
        "worst_s": worst,
        "vs_min_lat": lat / min_lat if min_lat else None,
        "fluid_s": fluid,
        "vs_fluid": lat / fluid if fluid else None,
        "race_s": race,
        "vs_race": lat / race if race else None,
        "vs_worst": lat / worst if worst else None,
        "choices": dict(Counter(r["chosen"] for r in rows)),
        "ran_on": dict(Counter(r["ran_on"] for r in rows)),
        "best": dict(Counter(r["best"] for r in rows)),
        "fell_back": sum(bool(r["fell_back"]) for r in rows),
        "wrong_by_size": by_size,
        "pmae": pmae_table(rows, clouds),
        "decision_cpu_s_mean": (sum(r["decision_cpu_s"] for r in rows) / n) if n else None,
    }
    acted = _actions_summary(rows)
    if acted is not None:
        summary["actions"] = acted
    if result.mode is Mode.DUPLICATOR and result.cloud is not None:
        saved = wasted = used = 0.0
        per_choice: dict[str, float] = {}
        for rec, r in zip(result.records, rows, strict=True):
            if not isinstance(rec.plan, RacePlan):
                continue  # no pod: auto kept the edge alone, or the cloud was down
            cloud = rec.plan.cloud
            g = gpus[cloud]
            used += r["cloud_used_s"] * g
            if r["ran_on"] != cloud and r.get("kept_cloud") is not True:
                # The edge kept the batch; the cloud T_p was not spent (× GPUs).
                s = rec.truth.runtimes[cloud].processing_s * g
                saved += s
                per_choice["edge"] = per_choice.get("edge", 0.0) + s
            w = r["cloud_wasted_s"] * g
            if w:
                wasted += w
                per_choice[cloud] = per_choice.get(cloud, 0.0) - w
        summary["cloud"] = {
            "runtime": result.cloud,
            "gpus": gpus.get(result.cloud, 1),
            "saved_s": saved,
            "wasted_s": wasted,
            "by_choice": per_choice,
            "used_s": used,
            "kept_cloud": sum(r.get("kept_cloud") is True for r in rows),
            "pods": Counter(
                rec.plan.cloud for rec in result.records if isinstance(rec.plan, RacePlan)
            ),
        }
    if result.mode is Mode.SHARE:
        images: Counter[str] = Counter()
        cloud_used: Counter[str] = Counter()
        for r in rows:
            images.update(r["shares"])
            for k, (u, _) in r["cloud_by"].items():
                cloud_used[k] += u * gpus.get(k, 1)
        summary["share"] = {
            "images": dict(images),
            "cloud_used_s_by_runtime": dict(cloud_used),
            "duplicate_images": sum(r["duplicate_images"] for r in rows),
            "clouds_deployed": dict(Counter(c for r in rows for c in r["share_clouds"])),
        }
    return {"summary": summary, "batches": rows}
