"""Scheduling policies: pure functions from estimates to a :class:`~stoic.values.Plan`.

The daemon and the replay call exactly these functions (DESIGN.md, "Two worlds, one
code path"), so a table of estimates is all a test needs.

* **selector** (paper §3.7): run where the predicted total T_s = T_t + T_d + T_p is
  smallest. Ties go to the edge, then to the runtime listed first: the edge costs no
  shared cloud time.
* **duplicator** (paper §4.3): start the edge at once and, in parallel, upload and deploy
  one GPU runtime; when its pod is ready, :func:`keep_cloud` decides on fresh estimates
  whether the GPU's processing beats what remains of the edge's work.
* baselines for the replay: **edge-only**, **gpu1-only**, **threshold** (a fixed
  batch-size cut-over to a GPU runtime), **oracle** (MIN-LAT: needs the ground truth, so
  only the replay can use it), and **pinned** (the user names the runtime).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stoic.errors import PredictorError
from stoic.values import Component, Estimate, Job, Mode, Plan


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """Knobs of the policies; defaults follow the paper."""

    edge_runtime: str = "edge"
    duplicator_runtime: str = "gpu1"
    threshold_runtime: str = "gpu1"
    threshold_images: int = 35  # the paper's edge/GPU1 cross-over (section 4.2)


def _order(estimates: Mapping[str, Estimate], edge: str) -> list[str]:
    names = list(estimates)
    return sorted(names, key=lambda n: (n != edge, names.index(n)))


def select_min(estimates: Mapping[str, Estimate], edge: str = "edge") -> str:
    """The runtime with the smallest predicted total (ties: edge first, then listed order)."""
    if not estimates:
        raise PredictorError("no runtime is available to estimate")
    order = _order(estimates, edge)
    return min(order, key=lambda n: (estimates[n].total.mean, order.index(n)))


def decide(
    mode: Mode,
    job: Job,
    estimates: Mapping[str, Estimate],
    *,
    options: PolicyOptions = PolicyOptions(),
    pinned: str | None = None,
    truth: Mapping[str, float] | None = None,
) -> Plan:
    """Choose where ``job`` runs. ``estimates`` holds the *available* runtimes only.

    ``truth`` (actual total seconds per runtime) is read by the oracle alone.
    """
    edge = options.edge_runtime
    has_edge = edge in estimates

    def plan(runtime: str, reason: str, speculative: bool = False) -> Plan:
        return Plan(runtime, mode, reason, dict(estimates), speculative, edge)

    def fallback(wanted: str) -> Plan:
        if has_edge:
            return plan(edge, f"{wanted} unavailable; fell back to {edge}")
        best = select_min(estimates, edge)
        return plan(best, f"{wanted} and {edge} unavailable; fastest remaining is {best}")

    match mode:
        case Mode.SELECTOR:
            best = select_min(estimates, edge)
            t = estimates[best].total
            return plan(
                best,
                f"selector: {best} has the smallest predicted T_s ({t.mean:.1f} ± {t.std:.1f} s)",
            )
        case Mode.DUPLICATOR:
            cloud = options.duplicator_runtime
            if cloud not in estimates:
                return fallback(cloud)
            if not has_edge:
                return plan(cloud, f"duplicator: {edge} unavailable; running {cloud} alone")
            return plan(
                cloud,
                f"duplicator: start {edge} now, deploy {cloud}, decide when its pod is ready",
                speculative=True,
            )
        case Mode.EDGE_ONLY:
            return plan(edge, "edge-only baseline") if has_edge else fallback(edge)
        case Mode.GPU1_ONLY:
            return plan("gpu1", "gpu1-only baseline") if "gpu1" in estimates else fallback("gpu1")
        case Mode.THRESHOLD:
            cut, gpu = options.threshold_images, options.threshold_runtime
            if job.n_images >= cut:
                if gpu in estimates:
                    return plan(gpu, f"threshold: {job.n_images} >= {cut} images")
                return fallback(gpu)
            return (
                plan(edge, f"threshold: {job.n_images} < {cut} images")
                if has_edge
                else fallback(edge)
            )
        case Mode.ORACLE:
            if truth is None:
                raise PredictorError("the oracle policy needs the ground truth (replay only)")
            known = {n: truth[n] for n in estimates if n in truth}
            if not known:
                raise PredictorError("the oracle has no ground truth for any available runtime")
            best = min(known, key=lambda n: known[n])
            return plan(best, f"oracle: {best} is fastest in hindsight ({known[best]:.1f} s)")
        case Mode.PINNED:
            if pinned is None:
                raise PredictorError("pinned mode needs a runtime")
            if pinned in estimates:
                return plan(pinned, f"pinned by the user to {pinned}")
            return fallback(pinned)
    raise PredictorError(f"unknown mode {mode!r}")  # pragma: no cover - exhaustive match


def keep_cloud(edge_remaining: Component, cloud_processing: Component) -> bool:
    """The duplicator's lagging decision (paper §3.7): when the cloud pod is ready, keep
    it (and cancel the edge) only if its predicted T_p beats the edge's predicted
    remaining time. On a tie the edge keeps the batch: it costs no shared cloud time."""
    return cloud_processing.mean < edge_remaining.mean
