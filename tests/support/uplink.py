"""A loopback HTTP "far side" for the uplink check: it answers (with any status), stays
silent, or goes away (``stop``), as a real link's other end does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class _Answer(asyncio.Protocol):
    """One connection: answer once the request's headers are in (or never), then close;
    cut at once while the far side is unplugged."""

    def __init__(self, server: LoopbackHttp) -> None:
        self.server = server
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.server.unplugged:
            transport.abort()
            return
        self.server.open.add(transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.server.answer:
            status = self.server.status
            self.transport.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self.transport)


class LoopbackHttp:
    """A minimal HTTP server on loopback; ``answer=False`` accepts and never replies.

    ``stop`` (idempotent) takes the "far side" away while a client may still be checking
    it: every connection, open or new, is cut without an answer. The listening socket
    stays until :meth:`close` (``far_side``'s exit), because closing an asyncio server
    while it accepts a connection leaks that connection's socket on Python 3.11 (the
    transport's constructor fails on the closed server): a ResourceWarning that failed
    the uplink tests now and then. Plain protocols rather than stream handlers, so the
    server holds every open transport.
    """

    def __init__(self, status: int = 200, answer: bool = True) -> None:
        self.status, self.answer = status, answer
        self._server: asyncio.Server | None = None
        self.unplugged = False
        self.open: set[asyncio.Transport] = set()
        self.url = ""

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Answer(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/readyz"
        return self.url

    async def stop(self) -> None:
        """Cut every connection and every new one: the far side is gone."""
        self.unplugged = True
        for transport in list(self.open):
            transport.abort()
        self.open.clear()
        await asyncio.sleep(0)  # connection_lost of the cut ones

    async def close(self) -> None:
        """Stop listening (when no client checks any more)."""
        await self.stop()
        if self._server is not None:
            self._server.close()
            self._server = None


@contextlib.asynccontextmanager
async def far_side(status: int = 200, answer: bool = True) -> AsyncIterator[LoopbackHttp]:
    """A started :class:`LoopbackHttp` (its ``url``), stopped on the way out."""
    server = LoopbackHttp(status, answer)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
