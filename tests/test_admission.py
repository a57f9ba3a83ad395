"""What a request must show before its body is read, and to whom the daemon answers
(issue 26, defects 1 and 5): :mod:`stoic.api.admission`.

In-process, every route of the app is tried (the list is read from the app, so a
route added later is tried too); one test runs ``stoic serve`` itself and watches its
memory and its temporary directory while a long body arrives without a token.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from stoic.api.admission import MAX_BODY_BYTES
from stoic.api.app import create_app
from stoic.api.ui import routes as ui_routes
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.daemon.controller import Controller
from tests.support.daemon import files
from tests.support.images import jpeg
from tests.support.processes import Serving
from tests.support.settings import make_settings, standin_config

TOKEN = "s3cret-token"
LONG = 2 * 1024 * 1024


@dataclass
class Counted:
    """The app behind a client, with the body bytes it pulled from the server."""

    client: httpx.AsyncClient
    app: FastAPI
    controller: Controller
    pulled: int = 0


@contextlib.asynccontextmanager
async def counted(
    tmp_path: Path, base_url: str = "http://stoic", **api: Any
) -> AsyncIterator[Counted]:
    settings = make_settings(tmp_path, api=api)
    ctl = Controller(settings, backends={"local": FakeBackend(default=FakeSpec(per_image_s=0.0))})
    app = create_app(settings, controller=ctl)

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        async def pull() -> Message:
            message = await receive()
            out.pulled += len(message.get("body", b""))
            return message

        await app(scope, pull, send)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=counting), base_url=base_url) as client,
    ):
        out = Counted(client, app, ctl)
        yield out


def every_route(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route of ``app`` (path parameters filled in): the API's
    from its OpenAPI description, the pages' from their routers, the static files,
    and one path no route has."""
    found: set[tuple[str, str]] = {("POST", "/no/such/route")}
    for path, operations in app.openapi()["paths"].items():
        found |= {(m.upper(), path) for m in operations}
    for route in [*app.routes, *ui_routes.router.routes, *ui_routes.landing_router.routes]:
        if isinstance(route, Mount):
            found.add(("GET", f"{route.path}/ui.css"))
        elif isinstance(route, Route):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return sorted((m, re.sub(r"\{[^}]+\}", "x", p)) for m, p in found)


async def chunks(n_bytes: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for _ in range(n_bytes // size):
        yield b"x" * size


# Defect 1: a body is read before the token is checked --------------------------------


async def test_no_route_reads_a_long_body_sent_without_the_token(tmp_path: Path) -> None:
    async with counted(tmp_path, token=TOKEN) as d:
        routes = every_route(d.app)
        assert ("PUT", "/v1/models/default") in routes and ("POST", "/ui/login") in routes
        for method, path in routes:
            r = await d.client.request(method, path, content=b"{" * LONG)
            assert r.status_code in (401, 413), (method, path, r.status_code)
            assert d.pulled == 0, (method, path)
            r = await d.client.request(method, path, content=chunks(LONG))
            assert r.status_code in (401, 413), (method, path, r.status_code)
            assert d.pulled <= MAX_BODY_BYTES + 64 * 1024, (method, path, d.pulled)
            d.pulled = 0
        assert d.controller.store.count_batches() == 0


async def test_a_long_body_is_refused_before_it_is_read_with_the_token_too(
    tmp_path: Path,
) -> None:
    async with counted(tmp_path, token=TOKEN) as d:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = await d.client.put(
            "/v1/models/default",
            content=b"{" * LONG,
            headers={**auth, "content-type": "application/json"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
        assert r.headers["connection"] == "close"  # 2 MB are not worth reading to drop
        assert d.pulled == 0
        # A short body still reaches its route; the uploads are not bound by it.
        r = await d.client.put("/v1/models/default", json={"version": "9"}, headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))), headers=auth)
        assert r.status_code == 202


def fds_under(pid: int, directory: Path) -> list[str]:
    """What the process ``pid`` holds open under ``directory`` (deleted files too)."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(directory)):
                out.append(target)
    return out


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def send_until_answered(
    port: int, head: bytes, body_bytes: int, watch: Callable[[], None] = lambda: None
) -> bytes:
    """Send ``head``, then up to ``body_bytes`` of body until the daemon answers,
    calling ``watch()`` after each 256 KiB; the answer's head (b"" if none came)."""
    block = b"x" * (256 * 1024)
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        while sent < body_bytes and not select.select([s], [], [], 0)[0]:
            try:
                s.sendall(block)
            except OSError:
                break
            sent += len(block)
            watch()
        with contextlib.suppress(OSError):
            s.settimeout(10)
            while b"\r\n\r\n" not in reply and (got := s.recv(65536)):
                reply += got
    return reply


@pytest.fixture
def token_daemon(tmp_path: Path) -> Iterator[tuple[Serving, int, Path]]:
    temp = tmp_path / "tmpdir"
    temp.mkdir()
    config = standin_config(
        tmp_path, tmp_path / "data", '"--batch-delay", "0"', extra=f'\n[api]\ntoken = "{TOKEN}"\n'
    )
    with Serving(tmp_path, config, TMPDIR=str(temp)) as serving:
        process = serving.start()
        yield serving, process.pid, temp


def test_stoic_serve_keeps_its_memory_and_temp_dir_when_a_long_body_comes_without_token(
    token_daemon: tuple[Serving, int, Path],
) -> None:
    serving, pid, temp = token_daemon
    before = sorted(os.listdir(temp))
    total = 64 * 1024 * 1024
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = peak_rss_kb(pid)
    head = (
        f"PUT /v1/models/default HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    reply = send_until_answered(serving.port, head, total)
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
    grown_mb = (peak_rss_kb(pid) - base) / 1024
    assert grown_mb < 16, f"RSS grew by {grown_mb:.0f} MB"

    # A file part to the login form: nothing spooled to the temporary directory while
    # the body arrives, nor after.
    boundary = "b0und"
    head = (
        f"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="token"; filename="t.bin"\r\n\r\n'
    ).encode()
    held: set[str] = set()
    reply = send_until_answered(
        serving.port, head, total, watch=lambda: held.update(fds_under(pid, temp))
    )
    assert held == set()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert fds_under(pid, temp) == [] and sorted(os.listdir(temp)) == before
    with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
        assert client.get("/readyz").status_code == 200


# Defect 5: cross-site requests and DNS rebinding -------------------------------------


async def test_only_loopback_names_the_configured_host_listed_names_and_addresses_get_in(
    tmp_path: Path,
) -> None:
    async with counted(
        tmp_path,
        base_url="http://localhost:8000",
        host="edge-box.lan",
        allowed_hosts=["stoic.example.org"],
    ) as d:
        for host in (
            "localhost", "LOCALHOST:8000", "localhost.", "127.0.0.1:8000", "[::1]:8000",
            "10.1.2.3", "edge-box.lan:8000", "stoic.example.org",
        ):  # fmt: skip
            r = await d.client.get("/healthz", headers={"Host": host})
            assert r.status_code == 200, host
        for host in (
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            "x@localhost",
            "::1",
            "",
        ):
            for method, path in (("GET", "/healthz"), ("GET", "/v1/batches"), ("GET", "/ui")):
                r = await d.client.request(method, path, headers={"Host": host})
                assert r.status_code == 400, (host, path)
                assert r.json()["error"]["code"] == "host_not_allowed"
        # In front of the page's own same-origin check, which a rebound name passes:
        # Origin and Host are both the attacker's name.
        r = await d.client.post(
            "/ui/batches",
            files=files(("a.jpg", jpeg(1))),
            headers={"Host": "evil.example:8000", "Origin": "http://evil.example:8000"},
        )
        assert r.status_code == 400
        assert d.controller.store.count_batches() == 0


async def test_any_host_when_allowed_hosts_says_so(tmp_path: Path) -> None:
    async with counted(tmp_path, allowed_hosts=["*"]) as d:
        assert (await d.client.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


async def test_a_foreign_origin_is_refused_on_every_state_changing_route(tmp_path: Path) -> None:
    async with counted(tmp_path, base_url="http://localhost:8000", allowed_hosts=[]) as d:
        changing = [(m, p) for m, p in every_route(d.app) if m not in ("GET", "OPTIONS")]
        assert ("POST", "/v1/batches") in changing and ("PUT", "/v1/models/default") in changing
        foreign: list[dict[str, str]] = [
            {"Origin": "http://evil.example"},
            {"Origin": "http://localhost:9999"},  # another port is another site
            {"Origin": "null"},
            {"Referer": "https://evil.example/page"},
        ]
        for method, path in changing:
            for headers in foreign:
                r = await d.client.request(
                    method, path, files=files(("a.jpg", jpeg(1))), headers=headers
                )
                assert r.status_code == 403, (method, path, headers)
                assert r.json()["error"]["code"] == "cross_origin"
        assert d.controller.store.count_batches() == 0
        assert d.controller.app_version == "1"
        # The same site, and scripts (no Origin), are let through.
        same = await d.client.post(
            "/v1/batches",
            files=files(("a.jpg", jpeg(1))),
            headers={"Origin": "http://localhost:8000"},
        )
        script = await d.client.post("/v1/batches", files=files(("b.jpg", jpeg(2))))
        assert (same.status_code, script.status_code) == (202, 202)
        # Reading is not state-changing: a cross-site GET is answered (the browser
        # keeps the answer from the page; CORS is not enabled).
        assert (await d.client.get("/v1/batches", headers=foreign[0])).status_code == 200


def test_allowed_hosts_are_names() -> None:
    from stoic.errors import ConfigError
    from stoic.settings import load_settings

    with pytest.raises(ConfigError, match="not a host name"):
        load_settings(api={"allowed_hosts": ["http://edge.lan"]})
    assert load_settings(api={"allowed_hosts": ["Edge.LAN."]}).api.allowed_hosts == ["edge.lan"]
