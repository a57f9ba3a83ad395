"""Uplink outages: how long an upload started now waits before its bytes move (ours).

The paper's T_t is the batch's bytes over the median recent bandwidth. An edge site's
uplink also goes down: a satellite hand-over, an LTE cell that drops, a backhaul that
fails for minutes. An upload started then stalls until the link is back, and a median
of past bandwidths says nothing of that: on random-002 (an 8-minute outage every
1.75 h) the selector sent 21 batches of seed 1 to a GPU pod that the edge would have
beaten, because their uploads waited 1–8 minutes for the link (docs/evaluation).

The inquisitor checks the uplink on its tick (:class:`UplinkCheck`, a cheap request
across it), and :class:`UplinkWatch` turns what the checks saw into the expected wait
of an upload started now, which the predictor adds to every cloud runtime's T_t:

* up: 0;
* down for ``e`` seconds: the mean residual life of the outages seen so far that
  lasted at least ``e``, E[D − e | D ≥ e]; when none did (the first outage, or one
  longer than any seen) ``max(e, period)``: an outage is expected to last about as long
  again as it already has (the Lindy rule, the memory a heavy-tailed duration has), and
  at least until the next check can say otherwise.

An outage's duration is measured at the check period's resolution: from the first
failed check to the first successful one.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from stoic.clock import Clock


class UplinkCheck(Protocol):
    """Whether the uplink carries traffic now (False: down). Never raises for a
    network error: that is the answer."""

    async def __call__(self) -> bool: ...


class UplinkWatch:
    """The uplink's state as the checks saw it, and the wait it predicts."""

    def __init__(self, clock: Clock, period_s: float, history: int = 50) -> None:
        self.clock = clock
        self.period_s = period_s
        self.durations: deque[float] = deque(maxlen=history)  # completed outages, s
        self.down_since: float | None = None
        self.checks = 0
        self.outages = 0  # outages seen to start

    @property
    def up(self) -> bool:
        return self.down_since is None

    def observe(self, up: bool) -> float | None:
        """Record one check; returns the outage's duration when this check ends one."""
        self.checks += 1
        now = self.clock.now()
        if up:
            if self.down_since is None:
                return None
            duration = max(now - self.down_since, 0.0)
            self.durations.append(duration)
            self.down_since = None
            return duration
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
        return None

    def wait_s(self) -> float:
        """Expected seconds until the uplink is back (module docstring)."""
        if self.down_since is None:
            return 0.0
        elapsed = max(self.clock.now() - self.down_since, 0.0)
        # ">=": durations are whole check periods, so an outage as long as the longest
        # seen has most likely just ended (its first successful check is due).
        longer = [d - elapsed for d in self.durations if d >= elapsed]
        if longer:
            return sum(longer) / len(longer)
        return max(elapsed, self.period_s)
