"""What a request must show, in its headers, before any route reads its body.

FastAPI reads a request's body before the route's dependencies run: a route with a JSON
body (``PUT /v1/models/default``) holds all of it in memory, and a form
(``POST /ui/login``) spools its file parts to the temporary directory, before the
token check refuses the request (issue 26: 300 MB sent without a token took the
daemon from 128 MB to 1 GB of RSS; 2 GB sent to ``/ui/login`` filled ``/tmp``). This
pure ASGI middleware stands in front of the whole application, health checks and
operator page included, and decides from the headers alone, in this order:

1. **Host** (``api.allowed_hosts``): the name the client asked for must be
   ``localhost``, ``api.host``, a listed name or an IP address, or the answer is 400. A
   page on ``evil.example`` whose name its owner re-points at 127.0.0.1 (DNS
   rebinding) reaches the daemon with ``Host: evil.example``; an IP address cannot be
   re-pointed, so it is always let through (probes and LAN clients use them).
2. **Origin**, for every method but GET, HEAD and OPTIONS: a browser sends the page's
   ``Origin`` (or at least its ``Referer``); when that names another host or port
   than ``Host``, the answer is 403. A cross-site form may POST multipart without a
   CORS preflight, and with no token (the default) nothing else would stop it.
   Scripts send neither header and are let through.
3. **Token**, with ``api.token`` set, on every path but the public ones (health checks,
   the API description, the landing page) and the operator page's (whose routes check
   the token or their login cookie before they read a body): 401 without it.
4. **Size**: a body to any route but the two uploads (which stream, under the
   ``api.max_batch_*`` limits) may hold :data:`MAX_BODY_BYTES`. A longer
   ``Content-Length`` gets 413 at once; a chunked body is read up to that bound before
   the route runs, 413 beyond it (408 when it is not all there within
   ``api.body_timeout_s``).

An answer given before the body was read keeps the connection when at most
:data:`DISCARD_BYTES` of the body are left (the server reads and drops them), and
closes it otherwise, rather than reading gigabytes only to drop them. The close lingers
(:mod:`stoic.api.server`), so a client still sending gets the answer, not a reset.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stoic.api.auth import header_refusal
from stoic.api.errors import ApiError, error_body
from stoic.logging import get_logger
from stoic.settings import ApiSettings

log = get_logger("stoic.api")

MAX_BODY_BYTES = 64 * 1024
"""The largest body of a request that is not an upload (a JSON document, a login form)."""

DISCARD_BYTES = 1024 * 1024
"""Unread body bytes the server drops to keep a connection after an early answer."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UPLOADS = frozenset({("POST", "/v1/batches"), ("POST", "/ui/batches")})
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz"})
PAGE = "/ui"


@dataclass(frozen=True)
class Rules:
    """What :class:`Admission` enforces, from the ``api`` settings."""

    hosts: frozenset[str] | None
    """Host names let through besides IP addresses; None: any."""
    token: str | None
    public: frozenset[str]
    """Paths open without the token."""
    body_timeout_s: float

    @classmethod
    def of(cls, api: ApiSettings, public: Iterable[str] = ()) -> Rules:
        names = set(api.allowed_hosts)
        hosts = None if "*" in names else frozenset({"localhost", api.host.lower(), *names})
        token = api.token.get_secret_value() if api.token is not None else None
        return cls(hosts, token, PUBLIC_PATHS | frozenset(public), api.body_timeout_s)


def authority(netloc: str) -> tuple[str, int | None] | None:
    """(host, port) of a ``Host`` value or an origin's netloc; None when malformed."""
    try:
        parts = urlsplit(f"//{netloc.strip()}")
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return host, port


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def foreign_origin(headers: Headers) -> str | None:
    """The ``Origin`` (or ``Referer``) of a request sent from another site, else None."""
    origin = (headers.get("origin") or headers.get("referer") or "").strip()
    if not origin:
        return None
    try:
        parts = urlsplit(origin)
    except ValueError:
        return origin
    if parts.scheme not in ("http", "https"):
        return origin  # "null" (a sandboxed frame, a file: page) included
    own = authority(headers.get("host", ""))
    return None if own is not None and authority(parts.netloc) == own else origin


def route_path(scope: Scope) -> str:
    """The path without the prefix the app is mounted under (``root_path``)."""
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class Body:
    """The request body as the application receives it, counted, so that an answer
    given before its end knows whether the rest is worth reading to keep the
    connection; a chunked body may be read ahead (:meth:`read_ahead`) and replayed."""

    def __init__(self, receive: Receive, headers: Headers) -> None:
        self._receive = receive
        length = headers.get("content-length", "")
        self.length = int(length) if length.isdigit() else None
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.read = 0
        self.complete = not self.chunked and not self.length
        self._ahead: collections.deque[Message] = collections.deque()

    async def _pull(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
        return message

    async def receive(self) -> Message:
        return self._ahead.popleft() if self._ahead else await self._pull()

    async def read_ahead(self, limit: int, timeout_s: float) -> ApiError | None:
        """Read the whole body (at most ``limit`` bytes) before the application does:
        413 over the limit, 408 when it is not all there within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.complete:
                    message = await self._pull()
                    self._ahead.append(message)
                    if message["type"] != "http.request":
                        return None  # gone: the application sees the disconnect
                    if self.read > limit:
                        return too_large(limit)
        except TimeoutError:
            return ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {timeout_s:g} s (api.body_timeout_s)",
            )
        return None

    def cheap_to_finish(self) -> bool:
        """Whether reading and dropping the rest of the body costs little."""
        if self.complete:
            return True
        return self.length is not None and self.length - self.read <= DISCARD_BYTES

    def watch(self, send: Send) -> Send:
        """``send``, closing the connection after an answer that leaves a long body
        unread."""

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and not self.cheap_to_finish():
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return watched


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"request body over {limit} bytes (only uploads may be longer)",
        field="body",
    )


class Admission:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp, rules: Rules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body = Body(receive, headers)
        method, path = str(scope["method"]), route_path(scope)
        upload = (method, path) in UPLOADS
        error = self.refusal(scope, headers, method, path)
        if error is None and not upload:
            if body.length is not None and body.length > MAX_BODY_BYTES:
                error = too_large(MAX_BODY_BYTES)
            elif body.chunked:
                error = await body.read_ahead(MAX_BODY_BYTES, self.rules.body_timeout_s)
        if error is not None:
            response = JSONResponse(
                error_body(error.code, error.message, field=error.field),
                status_code=error.status,
                headers=error.headers,
            )
            await response(scope, body.receive, body.watch(send))
            return
        await self.app(scope, body.receive, body.watch(send))

    def refusal(self, scope: Scope, headers: Headers, method: str, path: str) -> ApiError | None:
        """The answer to a request its headers disqualify (Host, Origin, token)."""
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            log.info("request refused", reason="host", host=host[:100], client=_peer(scope))
            return ApiError(
                400,
                "host_not_allowed",
                f"this daemon does not answer to the host name in {host[:100]!r} "
                "(api.allowed_hosts)",
                field="host",
            )
        if method not in SAFE_METHODS and (origin := foreign_origin(headers)) is not None:
            log.info("request refused", reason="origin", origin=origin[:100], client=_peer(scope))
            return ApiError(403, "cross_origin", "a request sent from another site", field="origin")
        if self.rules.token is not None and not self.open_path(path):
            return header_refusal(self.rules.token, headers.get("authorization"))
        return None

    def host_allowed(self, value: str) -> bool:
        if self.rules.hosts is None:
            return True
        parsed = authority(value)
        if parsed is None:
            return False
        host = parsed[0]
        return host in self.rules.hosts or is_ip(host)

    def open_path(self, path: str) -> bool:
        return path in self.rules.public or path == PAGE or path.startswith(PAGE + "/")


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
