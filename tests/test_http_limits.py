"""The HTTP server under careless and hostile clients (issue 13, points 2, 6 and 8).

The real server of ``stoic serve`` (:func:`stoic.api.server.build_server`: uvicorn
with the guarded h11 protocol) runs in a thread on a loopback port, with the fake
backend; the clients are raw sockets, so a test can send half a header, stall a body
or hang up mid-upload. Timeouts are set short; the assertions are about what happens
(a 408, a close, one log line, no 500), never about how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from stoic.api.app import create_app
from stoic.api.server import LINGER_BYTES, Server, build_server
from stoic.api.uploads import BodyReader
from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.daemon.controller import Controller
from stoic.errors import ClientDisconnected, RequestTimeout
from stoic.ingest.builder import TMP_PREFIX
from stoic.settings import Settings
from tests.support.images import jpeg
from tests.support.net import free_port
from tests.support.settings import make_settings


@dataclass
class Running:
    server: Server
    controller: Controller
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return s

    def temp_files(self) -> list[str]:
        tmp = self.data_dir / "tmp"
        return sorted(p.name for p in tmp.glob(f"{TMP_PREFIX}*")) if tmp.is_dir() else []


@contextlib.contextmanager
def serving(settings: Settings, fake: FakeBackend | None = None) -> Iterator[Running]:
    fake = fake or FakeBackend(default=FakeSpec(per_image_s=0.0))
    ctl = Controller(settings, backends={"local": fake})
    app = create_app(settings, controller=ctl)
    server = build_server(settings, ctl, app)
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield Running(server, ctl, settings.api.port, settings.data_dir)
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive()


def limits(tmp_path: Path, **api: Any) -> Settings:
    base: dict[str, Any] = {
        "port": free_port(),
        "header_timeout_s": 0.3,
        "body_timeout_s": 0.3,
    }
    base.update(api)
    return make_settings(tmp_path, api=base)


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


def multipart_head(boundary: str = "XyZ") -> bytes:
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def post_head(length: int, boundary: str = "XyZ", token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        "POST /v1/batches HTTP/1.1\r\nHost: stoic\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n{auth}\r\n"
    ).encode()


# Header timeout, connection cap ------------------------------------------------------


def test_idle_and_slow_headers_get_408_and_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serving(limits(tmp_path)) as d:
        idle = d.connect()
        half = d.connect()
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for s in (idle, half):
            with s:
                assert read_all(s).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        # A byte at a time, for longer than the header timeout: no renewal per byte.
        with d.connect() as drip:
            drip.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: ")
            with contextlib.suppress(OSError):  # the server has closed it: EPIPE
                for _ in range(100):
                    drip.sendall(b"a")
                    time.sleep(0.02)
            with contextlib.suppress(ConnectionResetError):
                read_all(drip)
        # A client that sends its headers in time is served as usual.
        assert httpx.get(f"{d.url}/healthz", trust_env=False).status_code == 200
        dropped = records(caplog, "connection dropped")
        assert [r.reason for r in dropped] == ["header_timeout"] * 3  # type: ignore[attr-defined]
        assert all(r.levelno == logging.INFO for r in dropped)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        text = d.controller.metrics.render()[0].decode()
        assert 'stoic_http_connections_dropped_total{reason="header_timeout"} 3.0' in text


def test_over_the_cap_idle_connections_make_room_for_a_health_check(tmp_path: Path) -> None:
    with serving(limits(tmp_path, max_connections=8, header_timeout_s=60)) as d:
        idle = [d.connect() for _ in range(30)]
        try:
            time.sleep(0.2)
            # Every new connection evicted the one that waited longest: the cap holds
            # and a health check gets through, however many idle connections there are.
            r = httpx.get(f"{d.url}/healthz", trust_env=False, timeout=10)
            assert r.status_code == 200
            evicted = 0
            for s in idle[:20]:
                s.settimeout(10)
                if read_all(s).startswith(b"HTTP/1.1 408"):
                    evicted += 1
            assert evicted == 20
            text = d.controller.metrics.render()[0].decode()
            assert 'stoic_http_connections_dropped_total{reason="evicted"}' in text
        finally:
            for s in idle:
                s.close()


def test_over_the_cap_with_every_connection_busy_the_newcomer_gets_503(tmp_path: Path) -> None:
    settings = limits(tmp_path, max_connections=8, header_timeout_s=60, body_timeout_s=60)
    with serving(settings) as d:
        busy = []
        for _ in range(8):  # uploads whose bodies stall: busy, not evictable
            s = d.connect()
            s.sendall(post_head(10_000) + multipart_head())
            busy.append(s)
        time.sleep(0.3)
        try:
            with d.connect() as late:
                late.settimeout(10)
                reply = read_all(late)
            assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"retry-after: 1" in reply
        finally:
            for s in busy:
                s.close()


# Bodies that stall or stop ------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_gets_408_not_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serving(limits(tmp_path)) as d, d.connect() as s:
        s.sendall(post_head(100_000) + multipart_head() + jpeg()[:100])
        reply = read_all(s)  # the server answers, then closes: the body is abandoned
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"connection: close" in head.lower()
        assert b'"code":"request_timeout"' in body
        abandoned = records(caplog, "upload abandoned")
        assert len(abandoned) == 1 and abandoned[0].levelno == logging.WARNING
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert d.temp_files() == []
        assert d.controller.store.count_batches() == 0


def test_a_client_that_hangs_up_mid_upload_is_logged_once_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serving(limits(tmp_path, body_timeout_s=60)) as d:
        with d.connect() as s:
            s.sendall(post_head(100_000) + multipart_head() + jpeg()[:100])
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while not records(caplog, "upload abandoned"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        abandoned = records(caplog, "upload abandoned")
        assert len(abandoned) == 1 and abandoned[0].levelno == logging.INFO
        assert abandoned[0].code == "client_disconnected"  # type: ignore[attr-defined]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not [r for r in caplog.records if r.exc_info]
        assert d.temp_files() == []
        assert d.controller.store.count_batches() == 0


def test_the_rest_of_a_refused_body_has_a_deadline(tmp_path: Path) -> None:
    settings = limits(tmp_path)
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"token": SecretStr("s3cret")})}
    )
    with serving(settings) as d, d.connect() as s:
        s.sendall(post_head(1_000_000) + multipart_head())  # no token: refused at once
        reply = read_all(s)  # ... and closed once the rest does not come
        assert reply.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    text = d.controller.metrics.render()[0].decode()
    assert 'stoic_http_connections_dropped_total{reason="body_timeout"} 1.0' in text


def read_response(s: socket.socket) -> bytes:
    """One answer on a kept-alive connection (its head and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length and (chunk := s.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_after_an_early_answer_and_the_rest_of_its_body_the_connection_is_kept_alive(
    tmp_path: Path,
) -> None:
    """Issue 26, point 11: the deadline on the rest of a refused body used to stay armed
    after the rest had come, and closed the connection later, under whatever request
    the client had sent on it meanwhile (a reset, no answer)."""
    settings = limits(tmp_path, token="s3cret", header_timeout_s=30, keep_alive_s=30)
    with serving(settings) as d, d.connect() as s:
        s.sendall(post_head(1_000) + multipart_head())  # no token: refused at once
        answer = read_response(s)
        assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert b"connection: close" not in answer.lower()  # 1 kB is worth dropping
        s.sendall(b"\0" * (1_000 - len(multipart_head())))
        time.sleep(1.0)  # past body_timeout_s (0.3 s), well within keep_alive_s
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: stoic\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200 OK\r\n")
    text = d.controller.metrics.render()[0].decode()
    assert "stoic_http_connections_dropped_total{" not in text


def test_between_requests_a_kept_alive_connection_waits_for_the_client(
    tmp_path: Path,
) -> None:
    """Issue 26, point 11: the header deadline used to run from the last answer, so the
    server closed idle connections, racing the client's next request; now it runs from
    the next request's first byte, and the client (its pool's idle limit) or
    keep_alive_s (75 s) ends an idle connection."""
    with serving(limits(tmp_path)) as d, d.connect() as s:
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: stoic\r\n\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(1.0)  # idle past header_timeout_s (0.3 s)
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: ")  # a next request that stalls
        assert read_all(s).startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_client_still_sending_after_an_answer_that_closes_gets_the_answer(
    tmp_path: Path,
) -> None:
    """The server lingers after its last answer: it reads and drops the rest instead of
    closing with unread bytes, which would reset the client's next write."""
    with serving(limits(tmp_path, body_timeout_s=30)) as d, d.connect() as s:
        s.sendall(post_head(64 * 1024 * 1024) + multipart_head())  # over max_batch_bytes
        assert select.select([s], [], [], 30)[0]  # answered before the body came
        for _ in range(128):  # 8 MB more, after the answer: no reset
            s.sendall(b"\0" * 65536)
        s.shutdown(socket.SHUT_WR)
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"connection: close" in reply.lower()


def test_a_client_that_streams_on_after_the_answer_is_cut_off(tmp_path: Path) -> None:
    """Lingering is bounded: a client streaming at loopback speed would otherwise cost
    a third of a core for LINGER_S."""
    with serving(limits(tmp_path, body_timeout_s=30)) as d, d.connect() as s:
        s.sendall(post_head(10**12) + multipart_head())  # 413 at once; then it streams on
        assert select.select([s], [], [], 30)[0]
        sent = 0
        with pytest.raises(OSError):  # reset once the daemon has dropped LINGER_BYTES
            while sent < 1024**3:
                s.sendall(b"\0" * 65536)
                sent += 65536
    assert sent < LINGER_BYTES + 32 * 1024**2  # what the daemon read, plus socket buffers


def test_uploads_beyond_the_slots_and_the_queue_get_503_busy(tmp_path: Path) -> None:
    settings = limits(
        tmp_path,
        max_concurrent_uploads=1,
        max_queued_uploads=1,
        upload_queue_timeout_s=0.5,
        body_timeout_s=60,
    )
    with serving(settings) as d:
        holder = d.connect()
        holder.sendall(post_head(10_000) + multipart_head())  # holds the only slot
        time.sleep(0.2)
        try:
            with httpx.Client(base_url=d.url, trust_env=False, timeout=30) as client:
                files = [("files", ("b.jpg", jpeg(), "image/jpeg"))]
                results: list[httpx.Response] = []

                def post() -> None:
                    results.append(client.post("/v1/batches", files=files))

                queued = threading.Thread(target=post)
                queued.start()
                time.sleep(0.2)
                refused = client.post("/v1/batches", files=files)  # the queue is full too
                queued.join(30)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "busy"
            assert refused.headers["retry-after"] == "2"
            # The queued one waited up to upload_queue_timeout_s, then gave up too.
            assert results[0].status_code == 503
            assert "api.upload_queue_timeout_s" in results[0].json()["error"]["message"]
        finally:
            holder.close()
        text = d.controller.metrics.render()[0].decode()
        assert "stoic_uploads_refused_total 2.0" in text


def scripted_receive(*messages: dict[str, Any]) -> tuple[Any, asyncio.Event]:
    """An ASGI receive that gives ``messages[0]`` at once and each later one only after
    the returned event is set (then it blocks forever: the reader cancels it)."""
    hang_up = asyncio.Event()
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if len(queue) < len(messages):
            await hang_up.wait()
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError

    return receive, hang_up


async def test_the_body_reader_notices_a_hang_up_while_the_consumer_is_busy() -> None:
    receive, hang_up = scripted_receive(
        {"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}
    )
    async with BodyReader(receive, timeout_s=30) as reader:
        chunks = reader.chunks()
        assert await anext(chunks) == b"abc"
        # The consumer is busy (validating) when the client leaves: the reader sees it
        # meanwhile and tells the validation threads.
        hang_up.set()
        assert await asyncio.to_thread(reader.cancelled.wait, 10)
        with pytest.raises(ClientDisconnected):
            await anext(chunks)


async def test_the_body_reader_watches_for_a_hang_up_after_the_last_byte() -> None:
    receive, hang_up = scripted_receive(
        {"type": "http.request", "body": b"all", "more_body": False}, {"type": "http.disconnect"}
    )
    async with BodyReader(receive, timeout_s=30) as reader:
        assert [c async for c in reader.chunks()] == [b"all"]
        assert reader.complete and not reader.cancelled.is_set()
        # The last part is being validated when the client leaves: the work is told.
        hang_up.set()
        assert await asyncio.to_thread(reader.cancelled.wait, 10)
        assert reader.disconnected


async def test_the_body_reader_times_out_on_silence() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async with BodyReader(receive, timeout_s=0.05) as reader:
        with pytest.raises(RequestTimeout) as info:
            await anext(reader.chunks())
    assert info.value.status == 408 and "api.body_timeout_s" in str(info.value)


# Drain --------------------------------------------------------------------------------


def test_drain_answers_503_while_it_waits_for_running_batches(tmp_path: Path) -> None:
    settings = limits(tmp_path)
    settings = settings.model_copy(
        update={"controller": settings.controller.model_copy(update={"drain_grace_s": 60.0})}
    )
    slow = FakeBackend(default=FakeSpec(per_image_s=0.0))
    slow.script_invokes("edge", InvokeStep(1.0))
    with serving(settings, slow) as d, httpx.Client(base_url=d.url, trust_env=False) as client:
        r = client.post("/v1/batches", files=[("files", ("a.jpg", jpeg(), "image/jpeg"))])
        bid = r.json()["id"]
        deadline = time.monotonic() + 30
        while not slow.running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # What SIGTERM does (Server.handle_exit): flags only.
        d.controller.mark_draining()
        d.server.should_exit = True
        time.sleep(0.3)
        ready = client.get("/readyz")  # the listener is still open
        assert ready.status_code == 503 and ready.json()["checks"]["controller"] == "draining"
        refused = client.post("/v1/batches", files=[("files", ("b.jpg", jpeg(), "image/jpeg"))])
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert client.get(f"/v1/batches/{bid}").json()["state"] == "running"
    assert d.controller.state == "stopped"
    with d.controller.store as store:
        assert store.get_batch(bid).state.value == "done"


def test_the_health_listener_answers_health_only_and_outside_the_main_cap(
    tmp_path: Path,
) -> None:
    health = free_port()
    settings = limits(tmp_path, max_connections=8, header_timeout_s=60, health_port=health)
    with serving(settings) as d:
        assert d.server.health_port == health
        url = f"http://127.0.0.1:{health}"
        assert httpx.get(f"{url}/healthz", trust_env=False, timeout=10).status_code == 200
        assert httpx.get(f"{url}/readyz", trust_env=False, timeout=10).status_code == 200
        other = httpx.get(f"{url}/v1/batches", trust_env=False, timeout=10)
        assert other.status_code == 404 and other.json()["error"] == "not_found"
        # The main port still serves the API.
        assert httpx.get(f"{d.url}/v1/batches", trust_env=False, timeout=10).status_code == 200
        # Idle connections fill the health listener's cap: they evict each other there,
        # and never a connection of the main port.
        main_idle = [d.connect() for _ in range(4)]
        flood = [socket.create_connection(("127.0.0.1", health), timeout=30) for _ in range(40)]
        try:
            assert httpx.get(f"{url}/healthz", trust_env=False, timeout=10).status_code == 200
            for s in main_idle:
                s.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    s.recv(1)  # still open: not evicted by the health listener's flood
        finally:
            for s in main_idle + flood:
                s.close()


def test_a_health_port_equal_to_the_api_port_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="health_port must differ from port"):
        limits(tmp_path, port=8123, health_port=8123)


def test_a_health_port_in_use_stops_the_server_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = limits(tmp_path, health_port=taken.getsockname()[1])
        ctl = Controller(settings, backends={"local": FakeBackend()})
        server = build_server(settings, ctl, create_app(settings, controller=ctl))
        with pytest.raises(SystemExit) as exc:
            server.run()
        assert exc.value.code == 1
