"""Injected time. Nothing in stoic calls ``time.time()`` for a timestamp it stores.

Durations and periodic loops use the running event loop's clock (``loop.time()``),
which ``looptime`` fast-forwards in tests and the replay; instants written to the
database come from a :class:`Clock`. The replay's clock is anchored to a simulated
start instant and advances with the event loop, so both stay consistent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


def local_midnight(now: float) -> float:
    """The instant of the last local midnight at or before ``now``: where "today"
    begins for the operator page and the daily cloud-usage rows."""
    lt = time.localtime(now)
    return time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))


class Clock(Protocol):
    """Returns the current instant in seconds since the Unix epoch."""

    def now(self) -> float: ...


class WallClock:
    """The real clock of the daemon."""

    def now(self) -> float:
        return time.time()


class LoopClock:
    """Instants that follow the running event loop's clock from ``epoch``.

    Under looptime the loop's time jumps to the next timer, so the replay's instants
    move exactly as its simulated durations.
    """

    def __init__(self, epoch: float) -> None:
        self._epoch = epoch
        self._origin: float | None = None

    def now(self) -> float:
        t = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = t
        return self._epoch + (t - self._origin)


class ManualClock:
    """A clock a test moves by hand."""

    def __init__(self, start: float = 1_600_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
