"""The few asyncio helpers every layer shares: cancel for real, run in the background,
supervise a long-running task.

Kept in one small module at the ground floor because the scheduling core (legs, the
duplicator, the inquisitor), the backends and the daemon all need the same three
disciplines, and each copy drifted a little when they lived beside their first user:

* **cancellation waits.** :func:`cancel_and_wait` cancels and then awaits every task,
  so "cancelled" means the work stopped (a killed process, a deleted pod), and every
  exception is retrieved so asyncio never reports one as "never retrieved"; clean-up
  that must not stop half-way (deleting a pod) runs :func:`to_the_end` even when its
  caller is cancelled again meanwhile;
* **background work is owned.** :class:`BackgroundTasks` keeps a strong reference to
  fire-and-forget tasks (asyncio keeps only weak ones), logs the ones that fail, and
  can be drained at shutdown;
* **supervised loops restart.** :func:`supervise` runs a named loop, logs a crash and
  restarts it with exponential back-off until told to stop (kopf's and arq's habit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from stoic.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


def succeeded(task: asyncio.Task[Any]) -> bool:
    """Done, not cancelled, and without an exception."""
    return task.done() and not task.cancelled() and task.exception() is None


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every unfinished task and wait until each has really finished."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in pending:  # retrieve exceptions so none is reported as "never retrieved"
        if not t.cancelled():
            t.exception()


async def to_the_end(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile, then let the
    cancellation through (its result or error is then dropped). For clean-up: an
    operator's cancel and a stop's drain may both cancel a batch, the second while the
    first's tear-down is deleting its pod."""
    task = asyncio.ensure_future(aw)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted = interrupted or not task.cancelled()  # ours, not the task's
        except Exception:
            break
    if interrupted:
        if not task.cancelled():
            task.exception()
        raise asyncio.CancelledError
    return task.result()


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, swallowing whatever it ends with (shutdown)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class BackgroundTasks:
    """Fire-and-forget tasks with an owner: referenced until done, failures logged."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed",
                owner=self.owner,
                task=task.get_name(),
                error=str(task.exception()),
            )

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Let every running task finish (their failures are logged, not raised)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        await cancel_and_wait(list(self._tasks))


async def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    stopping: Callable[[], bool],
    initial_delay_s: float,
    max_delay_s: float,
    on_crash: Callable[[str], None] = lambda name: None,
    reset_after_s: float = 60.0,
    logger: Any = None,
) -> None:
    """Run ``factory()`` until it returns or ``stopping()``; after a crash log it, call
    ``on_crash(name)`` and restart with exponential back-off (reset once a run has
    lasted ``reset_after_s``). The crash is logged on ``logger`` (default: this module's)."""
    out = logger if logger is not None else log
    loop = asyncio.get_running_loop()
    delay = initial_delay_s
    while not stopping():
        started = loop.time()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if loop.time() - started > reset_after_s:
                delay = initial_delay_s
            out.exception("background task crashed; restarting", task=name, delay_s=delay)
            on_crash(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
