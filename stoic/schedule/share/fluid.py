"""The fluid model of a shared batch: a lower bound in hindsight, a forecast in advance.

MIN-LAT (the paper's oracle) is the best *single* runtime per batch: the ceiling of
every scheduler that puts a batch on one runtime. A scheduler that splits a batch across
runtimes (share mode) can beat it, so it is also scored against the **fluid lower
bound**: with hindsight of when each runtime could start labelling (``ready_s``: its
deployment and warm-up; 0 at the edge), its fixed cost per call (``overhead_s``) and its
time per image (``per_image_s``), the earliest moment ``T`` at which ``n`` images could all
be done if work were perfectly divisible:

    Σ_i max(0, (T − ready_i − overhead_i) / per_image_i) ≥ n

No real schedule reaches it (images are whole, chunks pay their call overhead, uploads
take time), so a share-mode total at 100–125 % of it is close to the best possible.

The same arithmetic on *predicted* capacities is share mode's forecast: the policy
(:func:`stoic.schedule.decide.policy.decide`) adds a cloud runtime when it moves the predicted
finish forward enough, and the replay scores against it with the truth.
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
