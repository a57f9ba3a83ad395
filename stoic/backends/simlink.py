"""The simulated uplink in time: its outages, what crosses it, and uploads that share it.

:mod:`stoic.backends.simulated` draws each batch's bandwidth; this module knows *when*
the link carries it. An outage (``uplink.outages`` of a spec) is a window, once or
repeating, in which nothing crosses. :class:`Link` answers the questions an upload, a
deployment and the fluid bound ask of those windows:

* when does an upload of ``b`` bytes started at ``t`` end (:meth:`Link.finish`: it
  stalls through every outage it meets);
* when is the link next up (:meth:`Link.up_after`), and is it up now (:meth:`Link.up`);
* how long was it up between two instants (:meth:`Link.uptime`), and where do the
  outages between them end (:meth:`Link.ends_between`): the fluid bound's cumulative
  capacity and its candidate instants (:mod:`stoic.replay.bound`).

:class:`SharedUplink` divides one batch's link between the uploads in flight (processor
sharing), stalling them together through an outage when given the link's windows.

Times are the environment's seconds (0 = the workload's start), as the spec's hours are.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from stoic.errors import EnvSpecError

HOUR_S = 3600.0
MAX_WINDOWS = 1_000_000
"""Windows an upload may meet before the link is called never up long enough."""


class Window(Protocol):
    """An outage as the spec gives it (:class:`stoic.backends.simulated.Outage`)."""

    @property
    def start_h(self) -> float: ...
    @property
    def duration_h(self) -> float: ...
    @property
    def every_h(self) -> float | None: ...


def windows(outage: Window, from_s: float) -> Iterator[tuple[float, float]]:
    """The (start, end) seconds of ``outage``'s windows that end after ``from_s``, in
    order (an endless stream for a repeating outage; a few earlier ones may lead)."""
    if outage.every_h is None:
        yield outage.start_h * HOUR_S, (outage.start_h + outage.duration_h) * HOUR_S
        return
    k = max(0, math.floor((from_s / HOUR_S - outage.start_h) / outage.every_h) - 1)
    while True:
        start = outage.start_h + k * outage.every_h
        yield start * HOUR_S, (start + outage.duration_h) * HOUR_S
        k += 1


class Link:
    """The uplink's outage windows (none: always up)."""

    def __init__(self, outages: Sequence[Window]) -> None:
        self.outages = tuple(outages)

    def __bool__(self) -> bool:
        return bool(self.outages)

    def _merged(self, from_s: float) -> Iterator[tuple[float, float]]:
        """Every outage's windows from ``from_s``, by start."""
        return heapq.merge(*(windows(o, from_s) for o in self.outages))

    def finish(self, at_s: float, n_bytes: float, bps: float) -> float:
        """The instant an upload of ``n_bytes`` started at ``at_s`` at ``bps`` ends: the
        bytes cross while the link is up; an outage stalls them until it ends."""
        t, left = at_s, float(n_bytes)
        for i, (start, end) in enumerate(self._merged(at_s)):
            if end <= t:
                continue
            if start > t:
                if left <= bps * (start - t):
                    break
                left -= bps * (start - t)
            t = max(t, end)
            if i > MAX_WINDOWS:
                raise EnvSpecError("uplink.outages: the link is never up long enough to upload")
        return t + left / bps

    def up_after(self, at_s: float) -> float:
        """The first instant at or after ``at_s`` when the link is up."""
        t = at_s
        for i, (start, end) in enumerate(self._merged(at_s)):
            if start > t:
                break
            t = max(t, end)
            if i > MAX_WINDOWS:
                raise EnvSpecError("uplink.outages: the link is never up")
        return t

    def up(self, at_s: float) -> bool:
        """Whether the link carries traffic at ``at_s`` (outside every outage)."""
        return self.up_after(at_s) == at_s

    def uptime(self, from_s: float, to_s: float) -> float:
        """Seconds the link is up in ``[from_s, to_s]``."""
        if to_s <= from_s:
            return 0.0
        down, t = 0.0, from_s  # t: covered up to here
        for start, end in self._merged(from_s):
            if start >= to_s:
                break
            lo, hi = max(start, t), min(end, to_s)
            if hi > lo:
                down += hi - lo
                t = hi
        return to_s - from_s - down

    def ends_between(self, from_s: float, to_s: float) -> list[float]:
        """The instants in ``(from_s, to_s)`` where an outage ends, in order."""
        out = []
        for start, end in self._merged(from_s):
            if start >= to_s:
                break
            if from_s < end < to_s:
                out.append(end)
        return sorted(out)

    def ready(self, at_s: np.ndarray, work_s: np.ndarray) -> np.ndarray:
        """When a deployment requested at each ``at_s`` is seen ready, the cluster
        needing ``work_s`` (NaN stays NaN): the request waits for the link, and a pod
        ready during an outage is seen when the link is back."""
        out = np.full(np.shape(work_s), np.nan)
        for i, (t, w) in enumerate(zip(np.ravel(at_s), np.ravel(work_s), strict=True)):
            if not math.isnan(w):
                out.flat[i] = self.up_after(self.up_after(float(t)) + float(w))
        return out


class SharedUplink:
    """One batch's uplink, shared fairly by the uploads in flight (processor sharing):
    each of ``k`` concurrent uploads moves at ``bps / k``; an upload's end or a new one's
    start re-divides the link. Exact on the loop clock (looptime in the replay).

    With ``link`` (and ``offset_s``: the environment's time minus the loop's), nothing
    moves during an outage; without it, the link is always up at ``bps``."""

    def __init__(self, bps: float, link: Link | None = None, offset_s: float = 0.0) -> None:
        self.bps = bps
        self.link = link if link else None
        self.offset_s = offset_s
        self._left: dict[int, float] = {}
        self._ids = 0
        self._last = 0.0
        self._changed = asyncio.Event()

    def _advance(self, now: float) -> None:
        if self._left:
            if self.link is None:
                moved = (now - self._last) * self.bps / len(self._left)
            else:
                up = self.link.uptime(self._last + self.offset_s, now + self.offset_s)
                moved = up * self.bps / len(self._left)
            for k in self._left:
                self._left[k] -= moved
        self._last = now

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _wait_s(self, left: float, rate: float, now: float) -> float:
        """Seconds until ``left`` bytes have crossed at ``rate`` from ``now``."""
        if self.link is None:
            return left / rate
        at = now + self.offset_s
        return self.link.finish(at, left, rate) - at

    async def transfer(self, n_bytes: float) -> float:
        """Move ``n_bytes``; returns the seconds it took."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if not math.isfinite(self.bps) or n_bytes <= 0:
            return 0.0
        self._advance(start)
        self._ids += 1
        me = self._ids
        self._left[me] = float(n_bytes)
        self._notify()
        try:
            # Done when less than a microsecond (the loop clock's resolution) of work is
            # left: a shorter timer would not move the clock, and the loop would spin.
            while self._left[me] / (self.bps / len(self._left)) > 1e-6:
                rate = self.bps / len(self._left)
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._wait_s(self._left[me], rate, loop.time())):
                        await changed.wait()
                self._advance(loop.time())
        finally:
            self._advance(loop.time())
            del self._left[me]
            self._notify()
        return loop.time() - start
