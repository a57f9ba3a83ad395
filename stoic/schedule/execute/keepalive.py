"""How long a cloud pod stays up after its batch: the keep-alive rule (pure).

Knative scales a service to zero after a fixed grace period. Here the period is
predicted, per pod, from two things the controller knows when a batch ends:

* **the arrival process** (:class:`ArrivalModel`): the recent inter-arrival gaps, each
  weighted by how close the hour of day its gap started in is to the hour of the last
  arrival (a Gaussian kernel on the circle of hours), so that a quiet night is not
  priced with the afternoon's gaps. Given that no batch has arrived for ``elapsed``
  seconds, the gaps longer than ``elapsed`` give the residual wait ``A`` until the next
  arrival: an empirical distribution (``residuals`` with their ``weights``);
* **what a cold deployment costs** that runtime: ``saved_s``, the predictor's expected
  T_d (its median window, the tail above it, and the chance of a timeout).

Keeping the pod ``K`` seconds saves ``saved_s`` if the next batch arrives within ``K``
and costs the pod seconds it idles, ``min(A, K)``, at ``price`` seconds of latency per
pod second (× GPUs, a CPU pod counting one)::

    B(K) = saved_s · P(A ≤ K) − price · E[min(A, K)]

:func:`keep_alive_s` returns the ``K`` in ``[0, max_s]`` that maximises ``B``. Between
two residuals ``B`` only falls (the cost grows, the chance does not), so the best ``K``
is 0 or one of the residuals: keep the pod exactly until a likely next arrival, and
only while the chance of that arrival, times the deployment it saves, pays for the pod
seconds (the marginal form: keep while the hazard of an arrival exceeds
``price / saved_s``). Ties go to the shorter keep-alive. With fewer than ``min_gaps``
gaps seen, nothing is known of the arrivals and the pod goes (today's behaviour).

The next batch is assumed to take the warm pod; with T_d = 0 priced in
(:meth:`~stoic.schedule.scheduler.Scheduler.estimate`) the selector usually does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86_400.0
HOUR_S = 3_600.0


@dataclass(frozen=True, slots=True)
class KeepAliveOptions:
    """``settings.keepalive`` (built by :func:`~stoic.schedule.assembly.build_core`)."""

    enabled: bool = False
    price_s_per_pod_s: float = 0.02  # latency seconds one idle pod second (× GPUs) is worth
    max_s: float = 3_600.0  # the longest keep-alive
    min_gaps: int = 5  # gaps seen before any pod is kept
    history: int = 200  # inter-arrival gaps remembered
    hour_bandwidth_h: float = 2.0  # the time-of-day kernel's standard deviation
    max_per_runtime: int = 1  # warm pods kept per runtime
    fixed_s: float | None = None  # Knative's way: this grace period for every pod, unpredicted


def hour_of_day(at: float) -> float:
    """The hour of day (UTC, fractional) of clock instant ``at``."""
    return (at % DAY_S) / HOUR_S


def _hour_weight(a: float, b: float, bandwidth_h: float) -> float:
    d = abs(a - b) % 24.0
    d = min(d, 24.0 - d)
    return math.exp(-0.5 * (d / bandwidth_h) ** 2)


class ArrivalModel:
    """The batch arrivals the controller has seen: the last instant, recent gaps."""

    def __init__(self, history: int = 200, hour_bandwidth_h: float = 2.0) -> None:
        self.bandwidth_h = hour_bandwidth_h
        self.gaps: deque[tuple[float, float]] = deque(maxlen=history)  # (gap s, start hour)
        self.last: float | None = None

    def observe(self, at: float) -> None:
        """A batch arrived at clock instant ``at``."""
        if self.last is not None and at >= self.last:
            self.gaps.append((at - self.last, hour_of_day(self.last)))
        if self.last is None or at > self.last:
            self.last = at

    def residuals(self, now: float) -> tuple[list[float], list[float]]:
        """The residual waits (and weights) until the next arrival, given none since
        the last one: each gap longer than the time elapsed since, less that time."""
        if self.last is None:
            return [], []
        elapsed = max(now - self.last, 0.0)
        hour = hour_of_day(self.last)
        out: list[float] = []
        weights: list[float] = []
        for gap, start in self.gaps:
            if gap > elapsed:
                out.append(gap - elapsed)
                weights.append(_hour_weight(start, hour, self.bandwidth_h))
        return out, weights


def keep_alive_s(
    residuals: Sequence[float],
    weights: Sequence[float],
    *,
    saved_s: float,
    price: float,
    max_s: float,
) -> float:
    """The ``K`` in ``[0, max_s]`` maximising ``saved_s·P(A ≤ K) − price·E[min(A, K)]``
    for the residual waits ``A`` (module docstring); 0 with no residual to go on."""
    pairs = sorted((r, w) for r, w in zip(residuals, weights, strict=True) if w > 0.0)
    total = math.fsum(w for _, w in pairs)
    if not pairs or total <= 0.0 or saved_s <= 0.0:
        return 0.0
    best_k, best = 0.0, 0.0
    below_w = below_wr = 0.0  # weight, and weight × wait, of the residuals ≤ K
    for i, (r, w) in enumerate(pairs):
        below_w += w
        below_wr += w * r
        if r > max_s:
            break
        if i + 1 < len(pairs) and pairs[i + 1][0] == r:
            continue  # a tie: take the whole group at once
        chance = below_w / total
        idle = (below_wr + r * (total - below_w)) / total
        value = saved_s * chance - price * idle
        if value > best:
            best_k, best = r, value
    return best_k
