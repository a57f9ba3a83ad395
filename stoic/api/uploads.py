"""What an upload may hold of the daemon while it arrives: a slot, and a bounded wait.

Two pieces sit between ``POST /v1/batches`` and the ingest:

* :class:`UploadGate`: at most ``api.max_concurrent_uploads`` uploads are received and
  validated at once; up to ``api.max_queued_uploads`` more wait for a slot, each at
  most ``api.upload_queue_timeout_s``; anything beyond answers 503 ``busy`` with a
  ``Retry-After`` at once. A waiting upload holds a connection and nothing else (uvicorn
  stops reading its socket after 64 KiB), so honest bursts queue instead of failing;
  the bound keeps a flood from holding every connection slot.
* :class:`BodyReader`: reads the ASGI body itself rather than through Starlette's
  ``request.stream()``, for two reasons. A body that stops arriving (shorter than its
  ``Content-Length``, or a client that stalls) fails after ``api.body_timeout_s`` of
  silence with a 408 instead of holding the request forever; and a client that
  disconnects is noticed while its parts are being validated (the reader keeps a
  ``receive()`` outstanding whenever it holds less than :data:`READ_AHEAD_BYTES`, and
  always after the last byte), which sets the ``cancelled`` event the validation
  threads check on every read. A disconnect is a :class:`~stoic.errors.ClientDisconnected`,
  which the error handlers log once at INFO: not a 500 with two tracebacks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from stoic.api.errors import ApiError
from stoic.errors import ClientDisconnected, RequestTimeout

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

READ_AHEAD_BYTES = 1024 * 1024
"""Body bytes the reader may hold ahead of the ingest; then it stops reading (and
uvicorn stops reading the socket) until the ingest catches up. A hang-up mid-body is
seen when there is room again, i.e. after the part being validated (whose work the
budgets bound); after the last byte, at once."""


class UploadGate:
    """A counting gate with a bounded queue and a bounded wait (see the module)."""

    def __init__(
        self,
        slots: int,
        queue: int,
        timeout_s: float,
        *,
        on_change: Callable[[int], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.slots, self.queue, self.timeout_s = slots, queue, timeout_s
        self._free = asyncio.Semaphore(slots)
        self.in_flight = 0
        self.waiting = 0
        self._on_change = on_change
        self._on_refused = on_refused

    def _busy(self, why: str) -> ApiError:
        if self._on_refused is not None:
            self._on_refused()
        return ApiError(
            503,
            "busy",
            f"{why}; retry in a few seconds",
            headers={"Retry-After": "2"},
        )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one upload slot for the body of the ``async with``."""
        if self._free.locked() and self.waiting >= self.queue:
            raise self._busy(
                f"{self.in_flight} uploads in progress and {self.waiting} waiting "
                "(api.max_concurrent_uploads, api.max_queued_uploads)"
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._free.acquire()
        except TimeoutError:
            raise self._busy(
                f"no upload slot within {self.timeout_s:g} s (api.upload_queue_timeout_s)"
            ) from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        self._changed()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._free.release()
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_flight)


class BodyReader:
    """Reads an ASGI request body ahead of its consumer (see the module docstring).

    Use as ``async with BodyReader(receive, timeout_s=...) as reader:`` and iterate
    :meth:`chunks`; ``reader.cancelled`` is set when the client disconnects.
    """

    def __init__(
        self, receive: Receive, *, timeout_s: float, read_ahead: int = READ_AHEAD_BYTES
    ) -> None:
        self._receive = receive
        self.timeout_s = timeout_s
        self._read_ahead = read_ahead
        self.cancelled = threading.Event()
        self.disconnected = False
        self.complete = False
        """The whole body has arrived (the connection may be kept alive after an error)."""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BodyReader:
        self._task = asyncio.create_task(self._pump(), name="stoic:upload-body")
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        while True:
            while self._buffered >= self._read_ahead:
                self._room.clear()
                await self._room.wait()
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnect()
                return
            body = message.get("body", b"")
            if body:
                self._chunks.append(body)
                self._buffered += len(body)
            if not message.get("more_body", False):
                self.complete = True
                self._arrived.set()
                # Keep one receive() outstanding: it returns http.disconnect if the
                # client leaves while the last part is still being validated.
                if (await self._receive())["type"] == "http.disconnect":
                    self._disconnect()
                return
            self._arrived.set()

    def _disconnect(self) -> None:
        self.disconnected = True
        self.cancelled.set()
        self._arrived.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks; raises :class:`ClientDisconnected` or, after
        ``timeout_s`` without a byte, :class:`RequestTimeout`."""
        while True:
            if self.disconnected:
                raise ClientDisconnected("the client disconnected during the upload")
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._room.set()
                yield chunk
                continue
            if self.complete:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                raise RequestTimeout(
                    f"no byte of the request body for {self.timeout_s:g} s "
                    "(api.body_timeout_s); the body is shorter than its Content-Length "
                    "or the client stalled",
                    field="body",
                ) from None
