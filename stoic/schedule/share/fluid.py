"""The fluid model of a shared batch: share mode's forecast, and a piece of the bound.

A runtime that could start labelling at ``ready_s`` (its deployment; 0 at the edge),
pays a fixed cost per call (``overhead_s``) and takes ``per_image_s`` per image; the
earliest moment ``T`` at which such runtimes finish ``n`` images if work were perfectly
divisible is the least ``T`` with

    Σ_i max(0, (T − ready_i − overhead_i) / per_image_i) ≥ n

On *predicted* capacities this is share mode's forecast: the policy
(:func:`stoic.schedule.decide.policy.decide`) adds a cloud runtime when it moves the
predicted finish forward enough, and the session sizes its chunks by it
(:mod:`stoic.schedule.share.forecast`). The forecast feeds each pod over its own
uplink (a pod no faster than its images arrive), which is optimistic where pods share
the link and pessimistic where a pod's images upload while it deploys: fine for
ranking, not a bound.

The replay's hindsight **lower bound** (:mod:`stoic.replay.bound`) is the later of two
such finishes on the batch's truth: every runtime without the uplink, and the edge
with the shared uplink as one more runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Capacity:
    """One runtime as the fluid bound sees it (seconds)."""

    ready_s: float
    overhead_s: float
    per_image_s: float

    @property
    def start_s(self) -> float:
        return self.ready_s + self.overhead_s


def fluid_bound(n_images: int, runtimes: Iterable[Capacity]) -> float:
    """The least ``T`` at which the runtimes, sharing perfectly, finish ``n_images``
    (``inf`` if none can start). Exact: the left side is piecewise linear in ``T``."""
    caps = sorted((c for c in runtimes if math.isfinite(c.start_s)), key=lambda c: c.start_s)
    if n_images <= 0:
        return 0.0
    if not caps:
        return math.inf
    rate = 0.0  # images per second of the runtimes started so far
    offset = 0.0  # Σ start_i · rate_i over them
    for k, c in enumerate(caps):
        if c.per_image_s <= 0:
            return c.start_s  # infinitely fast once started
        rate += 1.0 / c.per_image_s
        offset += c.start_s / c.per_image_s
        t = (n_images + offset) / rate
        nxt = caps[k + 1].start_s if k + 1 < len(caps) else math.inf
        if t <= nxt:
            return max(t, c.start_s)
    return math.inf  # pragma: no cover - the last segment always solves
