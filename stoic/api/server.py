"""The HTTP server of ``stoic serve``: uvicorn, with bounds on what a connection may hold.

uvicorn (0.54–0.55 with h11; pinned to that range in pyproject.toml, because the guard
below subclasses its internal h11 protocol) gives a keep-alive timeout
(``timeout_keep_alive``) and nothing else that bounds an idle or slow connection: a
connection that sends nothing, or half a request line, stays open for as long as the
client likes, and thousands of them exhaust the process's file descriptors, after which
health checks and authorised uploads time out and asyncio's accept loop logs an error
every second.
``limit_concurrency`` does not help: it answers 503 to requests that *arrive*, and a
half-sent header never arrives. So this module adds, in an
:class:`~uvicorn.protocols.http.h11_impl.H11Protocol` subclass:

* a **header timeout** (``api.header_timeout_s``): a connection must complete each
  request's headers within this time from their first byte (a new connection: from
  the connection itself); otherwise it gets ``408 Request Timeout`` and is closed. A
  kept-alive connection between two requests has no header deadline: uvicorn's
  keep-alive timeout (``api.keep_alive_s``, longer than clients' own, so that they
  close idle connections and not the server, under a request just sent) or an
  eviction ends it;
* a **deadline on the rest of a refused body** (``api.body_timeout_s``): after an
  early answer (401, 413, 503) uvicorn reads and discards the rest of the body; a
  client that dribbles it is closed after that time. Once the rest is in, the
  connection is an idle keep-alive one like any other (uvicorn's keep-alive timer,
  which the body's bytes cancelled, runs again); the deadline used to stay armed and
  closed the connection later, whether or not the client had sent its next request on
  it meanwhile (issue 26: resets with no answer under load);
* a **lingering close**: when the server ends a connection (an answer with
  ``Connection: close``, a drop), it sends its answer and a FIN, then reads and drops
  whatever the client still sends, for :data:`LINGER_S` and :data:`LINGER_BYTES` at
  most, or until the client closes.
  Closing with unread bytes makes the kernel answer them with a reset, and a client
  still writing its request body then loses the answer (an HTTP library that fails
  on the write never reads it);
* a **connection cap** (``api.max_connections``): over the cap, the connection that
  has waited longest for its request headers (an idle keep-alive or a slow client) is
  closed to make room; if every connection is busy with a request, the new one gets
  ``503`` and is closed. A health check therefore always finds a slot, however many
  idle connections an attacker holds;
* the soft ``RLIMIT_NOFILE`` is raised (to the hard limit at most) so that the cap,
  one accept batch and the daemon's own files fit; where it cannot, the cap is
  lowered and a warning says so. The batch counts because asyncio accepts up to
  ``backlog`` connections in one loop turn, before any of them reaches
  ``connection_made`` and the cap: without that headroom ``accept()`` fails with
  ``EMFILE``, and asyncio then logs an error and arms a retry timer for *each* of the
  remaining attempts of the turn (CPython's ``_accept_connection``) and stops
  accepting for a second: the log flood and the stalled health checks of issue 13.
  So asyncio is given a small batch (:data:`ACCEPT_BATCH`); the kernel's queue is
  ``api.listen_backlog`` (set with ``listen()`` again on the bound socket). Keep that
  one short too: the queue is first come, first served, so under a connection flood a
  health check waits behind the whole queue (with 2,048, seconds); with a short queue
  the kernel drops the surplus SYNs instead, which slows the flood down and costs an
  unlucky health check one SYN retransmit (1 s) at worst.

A health check on the main port shares that queue with everyone, and under a flood
of connections an unlucky probe's SYN is dropped and re-sent after 1 s. With
``api.health_port`` set, a **health listener** of its own (a second socket: its own
kernel queue and its own connection cap) answers ``/healthz`` and ``/readyz`` only
(404 for anything else), for the kubelet or a load balancer's probes; the attack
surface stays on ``port``.

Each drop is logged at INFO with its reason (the log filter of :mod:`stoic.logging`
folds bursts into a count) and counted in ``stoic_http_connections_dropped_total``.

:class:`Server` is uvicorn's server with two changes. A signal only sets flags (the
process exits 0 after a clean drain instead of re-raising SIGTERM). And the drain runs
*before* the listener closes: while running batches get ``controller.drain_grace_s``,
new connections are still accepted and answered (``/readyz`` and new batches 503,
the rest as usual), so a load balancer sees the documented 503 instead of refused
connections. A second Ctrl-C abandons the drain.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import resource
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from stoic.daemon.controller import Controller
from stoic.errors import StoicError
from stoic.logging import get_logger
from stoic.settings import Settings

log = get_logger("stoic.http")

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together (h11's ``max_incomplete_event_size``, at h11's
own default, stated here so that it is a decision; a longer head is refused with 400)."""

ACCEPT_BATCH = 128
"""Connections asyncio accepts per loop turn (its ``backlog`` argument)."""

FD_RESERVE = 256
"""Descriptors kept free of connections: the database, the object store, the tar and
spool files of uploads, the function processes' pipes, the listener."""

MAX_LINGERING = 64
"""Connections that may linger at once (:meth:`GuardedH11Protocol.linger`), apart from
``api.max_connections``; beyond, a close is immediate. They are part of
:data:`FD_RESERVE`."""

LINGER_S = 2.0
LINGER_BYTES = 16 * 1024 * 1024
"""How long, and how much, a connection the server closes goes on reading (and
dropping) of what the client still sends (:meth:`GuardedH11Protocol.linger`): enough
for the rest of an ordinary body, not for a client that streams on at loopback speed
(gigabytes in 2 s, a third of a core per connection)."""

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: 29\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    b"too many connections; retry\r\n"
)


@dataclass
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float


class ConnectionGuard:
    """State shared by every connection of one server: who waits for headers (oldest
    first), the cap, and what to do when a connection is dropped."""

    def __init__(
        self, limits: ConnectionLimits, on_drop: Callable[[str], None] | None = None
    ) -> None:
        self.limits = limits
        self.waiting: collections.OrderedDict[GuardedH11Protocol, None] = collections.OrderedDict()
        self.open = 0
        self.lingering = 0
        """Connections closing gracefully (:meth:`GuardedH11Protocol.linger`): apart
        from ``open`` and the cap, at most :data:`MAX_LINGERING`."""
        self._on_drop = on_drop

    def dropped(self, reason: str, client: Any) -> None:
        log.info("connection dropped", reason=reason, client=_peer(client))
        if self._on_drop is not None:
            self._on_drop(reason)

    def make_room(self, newcomer: GuardedH11Protocol) -> bool:
        """Over the cap: close the connection that has waited longest for its request
        headers. False when none can be closed (every other connection is busy)."""
        for victim in self.waiting:
            if victim is not newcomer:
                victim.drop("evicted", _408)
                return True
        return False


def _peer(client: Any) -> str | None:
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return None


class LingeringTransport:
    """The transport uvicorn's protocol is given: the socket's, except that ``close()``
    lingers (:meth:`GuardedH11Protocol.linger`) and nothing more is written meanwhile."""

    def __init__(self, transport: asyncio.Transport, owner: GuardedH11Protocol) -> None:
        self._transport = transport
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._owner.lingering:
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._owner.lingering or self._transport.is_closing()

    def close(self) -> None:
        self._owner.linger()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a deadline on discarded bodies,
    a connection cap and lingering closes; ``guard`` is set on the subclass
    :func:`protocol_class` makes."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._dropped = False
        self._discarding = False
        self.lingering = False
        self._lingered = 0
        self._socket: asyncio.Transport | None = None

    # Connection life -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._socket = transport
        super().connection_made(cast(asyncio.Transport, LingeringTransport(transport, self)))
        guard = self.guard
        guard.open += 1
        self._await_headers()
        if guard.open > guard.limits.max_connections and not guard.make_room(self):
            self.drop("refused", _503)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lingering:
            self.guard.lingering -= 1
        else:
            self.guard.open -= 1
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # read and dropped: see linger()
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES and self._socket is not None:
                self._socket.close()
            return
        super().data_received(data)
        if self._dropped or self.lingering:
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._discarding:
                # The rest of an answered body is in: from here the connection is
                # an idle keep-alive one, as after any answer (uvicorn's keep-alive
                # timer, which the body's bytes stopped, runs again).
                self._discarding = False
                self._stop_waiting()
                self._keep_alive()
            # (Part of) the next request's headers, or nothing yet: the header deadline
            # runs from the first byte; it is not renewed by each byte.
            self._await_headers(started=bool(self.conn.trailing_data[0]))
        elif self.cycle is not None and not self.cycle.response_complete:
            self._discarding = False
            self._stop_waiting()  # headers complete: the app has the request

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is not answered:
            self._stop_waiting()  # a pipelined request has begun: the app has it
        elif self.conn.their_state is h11.SEND_BODY:
            # Answered before the body was read (401, 413, 503): uvicorn discards
            # the rest; give the client body_timeout_s to finish sending it.
            self._stop_waiting()
            self._discarding = True
            self._arm(self.guard.limits.body_timeout_s, "body_timeout")
        elif self.conn.their_state is h11.IDLE:
            self._await_headers(started=bool(self.conn.trailing_data[0]))

    def linger(self) -> None:
        """Close the connection gracefully: send what is buffered and a FIN, then read
        and drop whatever the client still sends, for :data:`LINGER_S` and
        :data:`LINGER_BYTES` at most, or until it closes its side. Closing with unread
        bytes makes the kernel answer them with a reset, and a client still sending its
        request body (an early 401, 413 or 503, a dropped connection) would lose the
        answer with it."""
        sock = self._socket
        if sock is None or self.lingering or sock.is_closing():
            return
        guard = self.guard
        if guard.lingering < MAX_LINGERING and sock.can_write_eof():
            try:
                sock.write_eof()
            except OSError:
                pass  # the client is gone already (a reset): close at once
            else:
                self.lingering = True
                self._stop_waiting()
                guard.open -= 1  # its slot is free: a lingering connection is counted apart
                guard.lingering += 1
                sock.resume_reading()
                self._deadline = self.loop.call_later(LINGER_S, sock.close)
                return
        sock.close()

    # Deadlines -----------------------------------------------------------------------

    def _await_headers(self, started: bool = True) -> None:
        """Mark the connection as waiting for request headers (evictable) and, once
        they have ``started`` (a byte of them is in, or the connection is new), start
        the header deadline unless it already runs. A kept-alive connection between
        requests has none: ``api.keep_alive_s`` ends it, or an eviction."""
        self.guard.waiting[self] = None
        if started and self._deadline is None:
            self._arm(self.guard.limits.header_timeout_s, "header_timeout")

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm(self, delay_s: float, reason: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(delay_s, self.drop, reason, _408)

    def _keep_alive(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def drop(self, reason: str, response: bytes) -> None:
        """Close the connection with a last raw response (it has no request, or its
        request was answered already, so h11 has nothing to say)."""
        if self._dropped or self.lingering:
            return
        self._dropped = True
        self._stop_waiting()
        if self.transport.is_closing():
            return
        self.guard.dropped(reason, self.client)
        with contextlib.suppress(Exception):
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(response)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def protocol_class(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class bound to ``guard`` (uvicorn instantiates the class itself)."""
    return type("StoicH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def fit_connection_cap(max_connections: int, backlog: int) -> int:
    """Raise the soft descriptor limit so ``max_connections`` plus one accept batch
    (``backlog``) plus :data:`FD_RESERVE` fit; return the cap that does fit (lower, with
    a warning, if the hard limit is)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    headroom = FD_RESERVE + backlog
    need = max_connections + headroom
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        fitted = max(8, soft - headroom)
        log.warning(
            "api.max_connections lowered to fit the descriptor limit",
            configured=max_connections,
            effective=fitted,
            nofile=soft,
        )
        return fitted
    return max_connections


class Server(uvicorn.Server):
    """uvicorn's server; a signal only sets flags, and the controller drains while the
    listener still answers (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        controller: Controller,
        health_protocol: type[GuardedH11Protocol] | None = None,
    ) -> None:
        super().__init__(config)
        self.controller = controller
        self.health_protocol = health_protocol
        self.health_port: int | None = None  # bound, once started (port 0 picks one)
        self.start_error: StoicError | None = None  # why the controller did not start

    def handle_exit(self, sig: int, frame: Any) -> None:
        # uvicorn re-raises the signal after its graceful shutdown, so the process would
        # end "killed by SIGTERM" however cleanly it drained; here it exits 0.
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        self.controller.mark_draining()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The controller starts here, before the app's lifespan (which then finds it
        # started): a start-up that fails for a reason of stoic's own (a database
        # that does not answer, a daemon holding the lease) ends in one line and
        # exit code 2 (``stoic serve``), not in uvicorn's traceback and exit code 3.
        try:
            await self.controller.start()
        except StoicError as exc:
            self.start_error = exc
            await self.controller.stop()
            self.should_exit = True
            return
        await super().startup(sockets)
        if self.should_exit:
            return
        # uvicorn says ``started`` once the main port listens; ours is started when the
        # health listener listens too (a caller waiting on ``started`` may probe it).
        self.started = False
        await self._start_health_listener()
        self.started = True
        backlog = self.controller.settings.api.listen_backlog
        if backlog == ACCEPT_BATCH:
            return
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                # listen() again on the bound socket: a longer kernel queue, while
                # asyncio keeps accepting ACCEPT_BATCH per turn.
                with contextlib.suppress(OSError), sock.dup() as own:
                    own.listen(backlog)

    async def _start_health_listener(self) -> None:
        a = self.controller.settings.api
        cls = self.health_protocol
        if a.health_port is None or cls is None:
            return
        app = only_health(self.config.loaded_app)

        def create_protocol() -> GuardedH11Protocol:
            protocol = cls(
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )
            protocol.app = app
            return protocol

        try:
            server = await asyncio.get_running_loop().create_server(
                create_protocol, host=a.host, port=a.health_port, backlog=ACCEPT_BATCH
            )
        except OSError as exc:  # as uvicorn does for the main port: one line, exit 1
            log.error("health listener: cannot bind", port=a.health_port, error=str(exc))
            for server in self.servers:
                server.close()
                await server.wait_closed()
            sys.exit(1)
        self.servers.append(server)  # closed with the others at shutdown
        self.health_port = int(server.sockets[0].getsockname()[1])
        log.info("health listener", host=a.host, port=self.health_port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.controller.drain(abandon=lambda: self.force_exit)
        await super().shutdown(sockets)


HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
HEALTH_CONNECTIONS = 32
"""The health listener's own connection cap (probes, not clients)."""


def only_health(app: Any) -> Any:
    """``app`` restricted to :data:`HEALTH_PATHS`: the health listener's application."""
    body = b'{"error": "not_found", "detail": "the health port answers /healthz and /readyz"}'

    async def health_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in HEALTH_PATHS:
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return health_only


def build_server(settings: Settings, controller: Controller, app: Any) -> Server:
    """The server of ``stoic serve`` for ``app`` (whose controller is ``controller``)."""
    a = settings.api

    def guard(max_connections: int) -> ConnectionGuard:
        return ConnectionGuard(
            ConnectionLimits(
                max_connections=max_connections,
                header_timeout_s=a.header_timeout_s,
                body_timeout_s=a.body_timeout_s,
            ),
            on_drop=lambda reason: controller.metrics.connections_dropped.labels(reason).inc(),
        )

    # The health listener's connections and accept batch share the descriptor budget.
    listeners = 1 if a.health_port is None else 2
    extra = HEALTH_CONNECTIONS * (listeners - 1)
    fitted = fit_connection_cap(a.max_connections + extra, ACCEPT_BATCH * listeners)
    main_cap = max(8, fitted - extra)
    health = protocol_class(guard(HEALTH_CONNECTIONS)) if a.health_port is not None else None
    config = uvicorn.Config(
        app,
        host=a.host,
        port=a.port,
        http=protocol_class(guard(main_cap)),
        log_config=None,
        access_log=False,
        lifespan="on",
        backlog=ACCEPT_BATCH,
        timeout_keep_alive=max(1, round(a.keep_alive_s)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=int(settings.controller.drain_grace_s) + 5,
    )
    return Server(config, controller, health)
