"""The writes a batch must not lose, retried with back-off until the store takes them.

A finished batch's result is worth minutes of pod time. When the database is locked
past its busy timeout (``database.busy_timeout_s``) or the disk is full, the write that
records the result fails; giving up there left the batch ``running`` with no owner
until a restart, its result lost. So the dispatcher keeps the result in memory and
retries the write (:func:`until_written`), waiting ``controller.store_retry_initial_s``
at first and twice as long after each failure, up to ``controller.store_retry_max_s``,
until it lands. The claim of the next batch is retried the same way.

Which failures are worth a retry is decided here, once (:func:`transient`): database
and object store failures and OS errors (``ENOSPC``, ``EIO``), but not the typed
answers that another try cannot change (the batch is not found, or its state forbids
the move because it was finished elsewhere; a missing object, a bad key), and not
programming errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from stoic.errors import (
    BatchNotFound,
    BatchStateError,
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStoreError,
    RuntimeNotFound,
    StoreError,
)
from stoic.settings import ControllerSettings

T = TypeVar("T")

_FINAL = (BatchNotFound, BatchStateError, RuntimeNotFound, ObjectNotFound, InvalidObjectKey)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage failure that a later try may not meet."""
    if isinstance(exc, _FINAL):
        return False
    return isinstance(exc, StoreError | ObjectStoreError | OSError)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between tries: ``initial_s``, doubled after each, at most ``max_s``."""

    initial_s: float
    max_s: float

    @classmethod
    def from_settings(cls, c: ControllerSettings) -> Backoff:
        return cls(c.store_retry_initial_s, c.store_retry_max_s)

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


OnRetry = Callable[[BaseException, float], None]
"""Told of each failed try: the error and the seconds until the next one."""


async def until_written(write: Callable[[], T], *, backoff: Backoff, on_retry: OnRetry) -> T:
    """Run the blocking ``write`` in a thread until it succeeds; a :func:`transient`
    failure is reported to ``on_retry`` and tried again after the back-off, any other
    is raised. Cancelling stops the retries (a write already in its thread finishes)."""
    delays = backoff.delays()
    while True:
        try:
            return await asyncio.to_thread(write)
        except Exception as exc:
            if not transient(exc):
                raise
            delay = next(delays)
            on_retry(exc, delay)
            await asyncio.sleep(delay)
