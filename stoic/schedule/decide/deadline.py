"""Deploy deadlines and pipelined uploads: two actions beyond the paper's (issue 23 §1).

The paper's selector deploys, uploads, and waits up to the deployment timeout (600 s)
for a pod that may never come. Two cheaper choices are open at decision time:

* **A deploy deadline** ``D``: past ``D`` seconds without a ready pod, abandon the
  deployment (the backend tears it down) and fall back as after a timeout. A pod ready
  at ``d <= D`` finishes the batch at ``max(overlap, d) + after``; one not ready by
  ``D`` costs ``D`` plus the fallback's total. Over the deployment distribution the
  predictor holds (its ready samples, shifted to the window's level, and its timeout
  rate) the expected total is piecewise linear and increasing in ``D`` between samples
  and drops at each, so its least over ``[0, timeout]`` lies at a sample or at the
  timeout (no deadline): :func:`choose_deadline` tries exactly those. The timeout is a
  candidate, so the choice is never worse *in expectation* than no deadline. (A
  deadline below the fastest sample only ever falls back: that is not choosing the
  runtime, which the selector weighs by itself.)
* **A pipelined upload**: the package uploads while the pod deploys, so a pod ready at
  ``d`` finishes at ``max(T_t, d) + T_p`` rather than ``T_t + d + T_p`` (the
  duplicator has always done this): ``overlap = T_t``, ``after = T_p``.

**At a price** (the cloud budget's λ, :mod:`stoic.schedule.decide.budget`) the choice
minimises the expected total plus ``pod_price`` times the pod-seconds the leg expects to
hold, from its deployment's request to its teardown: a pod ready at ``d <= D`` is held
to the end of the batch, ``max(overlap, d) + after`` (the same as its total), one
abandoned at ``D`` for ``D``, a timed-out one for the timeout. That is the total's own
form with a fallback of 0, so the priced objective is piecewise linear and increasing
between samples too, and the same candidates hold its least: a price makes a deadline
earlier (an abandoned pod is released), never turns it off.

A deadline that buys less than ``min_gain_s`` in expectation is not set: the empirical
distribution has no mass past its largest sample, and a deadline just above it would
abandon a deployment a little slower than any seen for a gain of a few milliseconds.
Nor is one set on fewer than :data:`MIN_SAMPLES` ready deployments: a runtime known
only by its prior, or by a handful of deployments, would be given up on at the first
one slower than those, and a deadline records no sample to learn better from.

Pure functions of numbers, as the rest of ``decide/``: a table is all a test needs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from stoic.values import Estimate

#: Ready deployments a deadline is chosen on, at least (module docstring).
MIN_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class DeadlineChoice:
    """A cloud leg's deadline, the expected total it gives and the pod-seconds it
    expects to hold (not × GPUs).

    ``deadline_s`` counts from the start of the deployment; None: no deadline (the
    deployment timeout bounds the wait, as in the paper)."""

    deadline_s: float | None
    expected_s: float
    pod_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Deployments:
    """The deployment distribution a choice is made on: T_d of the ready deployments
    (any order), the chance of a timeout, and the timeout."""

    ready_s: Sequence[float]
    p_timeout: float
    timeout_s: float


def expected_at(
    dist: Deployments, deadline_s: float, *, overlap_s: float, after_s: float, fallback_s: float
) -> float:
    """E[total] with the deployment abandoned at ``deadline_s`` (``timeout_s``: none).
    The reference :func:`choose_deadline` is held to in the tests."""
    d = min(deadline_s, dist.timeout_s)
    missed = d + fallback_s
    ready = dist.ready_s
    if not ready:
        return missed
    part = sum((max(overlap_s, r) + after_s) if r <= d else missed for r in ready) / len(ready)
    return _mix(dist.p_timeout, part, missed)


def _mix(p_timeout: float, ready_part: float, missed: float) -> float:
    """``ready_part`` weighed by the chance of no timeout, ``missed`` by that of one (a
    certain-never timeout adds nothing, even with no timeout to wait for)."""
    if p_timeout <= 0.0:
        return ready_part
    return (1.0 - p_timeout) * ready_part + p_timeout * missed


def pod_s_at(dist: Deployments, deadline_s: float, *, overlap_s: float, after_s: float) -> float:
    """E[pod-seconds held] with the deployment abandoned at ``deadline_s`` (module
    docstring): :func:`expected_at` with nothing after a miss."""
    return expected_at(dist, deadline_s, overlap_s=overlap_s, after_s=after_s, fallback_s=0.0)


def choose_deadline(
    dist: Deployments,
    *,
    overlap_s: float,
    after_s: float,
    fallback_s: float,
    min_gain_s: float = 0.0,
    pod_price: float = 0.0,
) -> DeadlineChoice:
    """The deadline of least expected total + ``pod_price`` · pod-seconds (module
    docstring); None where none beats no deadline by ``min_gain_s``."""
    timeout, p = dist.timeout_s, dist.p_timeout
    ready = sorted(r for r in dist.ready_s if math.isfinite(r))
    n = len(ready)
    if n == 0:
        return DeadlineChoice(None, timeout + fallback_s, timeout)
    done = [0.0]
    for r in ready:
        done.append(done[-1] + max(overlap_s, r) + after_s)

    def expected(d: float, fallback: float = fallback_s) -> float:
        j = bisect.bisect_right(ready, d)
        part = (done[j] + (n - j) * (d + fallback)) / n if j < n else done[n] / n
        return _mix(p, part, d + fallback)

    def objective(d: float) -> float:
        total = expected(d)
        return total + pod_price * expected(d, 0.0) if pod_price > 0 else total

    none = objective(timeout)
    best_d, best = timeout, none
    for d in ready:
        if d >= timeout:
            break
        e = objective(d)
        if e < best:
            best_d, best = d, e
    if best_d >= timeout or none - best < min_gain_s:
        return DeadlineChoice(None, expected(timeout), expected(timeout, 0.0))
    return DeadlineChoice(best_d, expected(best_d), expected(best_d, 0.0))


def cloud_choice(
    estimate: Estimate,
    fallback_s: float,
    *,
    deadline: bool,
    pipelined: bool,
    min_gain_s: float = 0.0,
    pod_price: float = 0.0,
) -> DeadlineChoice:
    """A cloud runtime's deadline, expected total and pod-seconds in the selector: its
    deployment distribution from the estimate's :class:`~stoic.values.Risk` (the ready
    samples; the window's estimate alone where there are none), its upload overlapped
    with the deployment if ``pipelined``, the processing tail priced as ``expected``
    does, and its pod-seconds at ``pod_price`` (latency seconds per pod-second, × GPUs)."""
    r = estimate.risk
    transfer, processing = estimate.transfer.mean, estimate.processing.mean
    processing += estimate.processing_tail_s
    overlap, after = (transfer, processing) if pipelined else (0.0, transfer + processing)
    ready = r.ready_s or (estimate.deployment.mean + r.deployment_excess_s,)
    dist = Deployments(ready, r.p_timeout, r.timeout_s or math.inf)
    if not deadline or len(r.ready_s) < MIN_SAMPLES:
        e = expected_at(
            dist, dist.timeout_s, overlap_s=overlap, after_s=after, fallback_s=fallback_s
        )
        return DeadlineChoice(
            None, e, pod_s_at(dist, dist.timeout_s, overlap_s=overlap, after_s=after)
        )
    return choose_deadline(
        dist,
        overlap_s=overlap,
        after_s=after,
        fallback_s=fallback_s,
        min_gain_s=min_gain_s,
        pod_price=pod_price,
    )


def race_deadline(edge_total_s: float, cloud: Estimate, timeout_s: float) -> float | None:
    """The duplicator's cloud leg: a pod ready after ``edge total − cloud T_p`` cannot
    beat the edge, which runs anyway (the lagging decision would tear it down), so the
    deployment is abandoned then: no latency lost, its pod time saved. None: the
    timeout comes first."""
    d = max(edge_total_s - cloud.processing.mean, 0.0)
    return d if d < timeout_s else None
