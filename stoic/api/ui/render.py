"""Rendering the operator page off the event loop, once for every poller.

Rendering the page on the event loop starved ingest: with 7,000 batches in the store a
render took 160 ms of the loop, and twenty pollers brought accepted uploads from 34 to
6.5 per second. Two things fix it:

* **Off the loop.** What lives in memory on the loop (the predictor, the scheduler,
  readiness) is copied there (cheap, frozen values); the database reads, the charts and
  the Jinja2 render run in a worker thread (:meth:`Renderer.run`), one render at a
  time, so the page never holds more than one of asyncio's default threads (which the
  ingest's database writes use too) and never more than one thread's share of the GIL.
* **Once for every poller.** :class:`RenderCache` keeps each rendered part (and the
  page made of them) for ``ui.render_cache_s`` (1 s) and hands it to every request in
  that time; requests that arrive while a part is being rendered wait for that render
  rather than start another. Twenty pollers then cost what one does. A render that
  fails is not kept: the next request tries again.

Keys hold everything the HTML depends on (the part, its limit, the path prefix the app
is mounted under, the batch id). A stale render is dropped when the next one starts, and
at most :data:`MAX_ENTRIES` are kept (least recently rendered first out), so the cache
holds no more than what was rendered in the last ``ui.render_cache_s``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from stoic.clock import Clock

T = TypeVar("T")

MAX_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class _Entry:
    at: float
    render: asyncio.Task[str]


class RenderCache:
    """Rendered HTML by key, shared for ``ttl_s`` (instants from ``clock``)."""

    def __init__(self, *, ttl_s: float, clock: Clock, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def _fresh(self, e: _Entry, now: float) -> bool:
        if not e.render.done():
            return True
        if e.render.cancelled() or e.render.exception() is not None:
            return False
        return 0 <= now - e.at < self.ttl_s

    async def get(self, key: Hashable, render: Callable[[], Awaitable[str]]) -> str:
        """The HTML of ``key``: the kept one while fresh (or being rendered), else a new
        ``render()``. A caller that goes away does not cancel a render others wait on."""
        now = self._clock.now()
        e = self._entries.get(key)
        if e is None or not self._fresh(e, now):

            async def run() -> str:
                return await render()

            task = asyncio.create_task(run(), name=f"stoic-ui-render {key!r}")
            task.add_done_callback(_retrieve)
            for old in [k for k, x in self._entries.items() if not self._fresh(x, now)]:
                del self._entries[old]
            e = _Entry(now, task)
            self._entries[key] = e
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return await asyncio.shield(e.render)

    def clear(self) -> None:
        """Forget every render: an operator's action changed what the page shows, and
        the page they are sent back to must show it."""
        self._entries.clear()


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark a failed render's error as seen: its waiters (if any are left) raise it."""
    if not task.cancelled():
        task.exception()


class Renderer:
    """Runs render work in a worker thread, one at a time."""

    def __init__(self) -> None:
        self._one = asyncio.Semaphore(1)

    async def run(self, fn: Callable[[], T]) -> T:
        async with self._one:
            return await asyncio.to_thread(fn)
