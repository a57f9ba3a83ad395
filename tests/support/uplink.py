"""A loopback HTTP "far side" for the uplink check: it answers (with any status), stays
silent, or goes away (``stop``), as a real link's other end does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class LoopbackHttp:
    """A minimal HTTP server on loopback; ``answer=False`` accepts and never replies.
    ``stop`` (idempotent) takes the "far side" away."""

    def __init__(self, status: int = 200, answer: bool = True) -> None:
        self.status, self.answer = status, answer
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if not self.answer:
                await asyncio.sleep(3600)
            writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/readyz"
        return self.url

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def far_side(status: int = 200, answer: bool = True) -> AsyncIterator[LoopbackHttp]:
    """A started :class:`LoopbackHttp` (its ``url``), stopped on the way out."""
    server = LoopbackHttp(status, answer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
