"""Hostile and careless clients against a real ``stoic serve`` (issue 13).

    .venv/bin/python benchmarks/bench_hostile.py [--attack all|junk|png|slowloris|fields|
        slowbody|hangup|pollers|diskfull|keepalive|unauthenticated] [--nofile 1024]
        [--connections 3000] [--duration 20] [--api KEY=N ...]

Starts ``stoic serve`` on a loopback port with its default limits and a temporary data
dir (the runtimes run the stand-in function server of the tests, ``tests/standin_function.py``,
so no TensorFlow), under a descriptor limit of ``--nofile`` (1024 by default, the
usual soft limit: the daemon may not raise it, so the connection cap must fit under
it). Then, one attack after the other, while a prober asks ``GET /healthz`` on a new
connection every 50 ms (on the health listener with ``--health-port``, else on the
attacked port):

* **junk**: six concurrent uploads of a ~460 KB zip of junk "JPEGs" (a JPEG header,
  then 2 MB of zeros, 200 of them), then the same with ``skip_invalid=true``;
* **png**: six concurrent uploads of a 12,000 × 12,000 PNG (~420 KB: zeros compress),
  then of a 7,000 × 7,000 one (49 Mpx, under the limit) whose data stream is cut short;
* **slowloris**: ``--connections`` connections that send half a request header and
  stall, re-opened as the daemon drops them, for ``--duration`` seconds;
* **fields**: a 2 GB body of distinct form fields, and one of a single endless field
  value, each sent until the daemon answers;
* **slowbody**: 50 uploads whose body is shorter than its ``Content-Length``;
* **hangup**: 200 uploads that hang up mid-body;
* **pollers** (:func:`page_pollers`): with ``--seed-batches`` (7,000) finished batches in
  the store, ingest throughput (small uploads from 8 clients, back to back) without and
  with ``--pollers`` (20) clients each fetching the operator page ``/ui`` every
  ``--poll-period`` seconds (1), in alternating phases of ``--phase`` seconds (10), twice
  each. It prints accepted uploads per second, the answers, the page's latency and the
  daemon's CPU per phase, and what the pollers cost ingest (the issue's bound: 10 %).
* **diskfull**: a daemon of its own on a 20 MB tmpfs, filled by uploads until they are
  refused, then freed (:func:`bench_disk_full`).
* **keepalive** (issue 26): 1,000 uploads of five ~210 KB JPEGs from one httpx client
  keeping 100 connections alive (a third or more are refused busy at the defaults);
  the figure that matters is how many got no answer at all. ``--api`` shortens the
  daemon's timeouts to make idle closes frequent (``--api header_timeout_s=2
  --api body_timeout_s=2 --api max_concurrent_uploads=1 --api max_queued_uploads=8
  --api upload_queue_timeout_s=1``);
* **unauthenticated** (issue 26), on a second daemon that has an ``api.token`` and a
  temporary directory of its own: long bodies sent without the token, each until the
  daemon answers: 300 MB of JSON to ``PUT /v1/models/default`` (with a
  ``Content-Length``, then chunked), 2 GB of a file part to ``POST /ui/login``, 2 GB to
  ``POST /v1/batches``. Besides the figures below it prints the bytes each sent before
  its answer and the most the daemon held in its temporary directory meanwhile.

For each it prints the daemon's CPU seconds (``/proc/PID/stat``, utime + stime), its
peak RSS above the baseline (``VmHWM`` after resetting it through
``/proc/PID/clear_refs``), the answers the attackers got, the bytes the daemon logged,
and the health check's latency (p50 / p99 / max, and failures) during the attack. The
machine's load average is printed too: the figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from stoic.store.store import Store
from stoic.store.tables import BatchTable

REPO = Path(__file__).resolve().parents[1]
STAND_IN = REPO / "tests" / "standin_function.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# The daemon ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    probe_port: int  # where the prober asks /healthz: the health listener if there is one

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(key)

    def reset_peak(self) -> int:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self.status_kb("VmRSS")

    def log_bytes(self) -> int:
        return self.log.stat().st_size


@contextlib.contextmanager
def daemon(
    nofile: int, api: dict[str, int | str], temp_dir: Path | None = None
) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    config = tmp / "stoic.toml"
    config.write_text(
        f'data_dir = "{tmp / "data"}"\n'
        "[controller]\ninquisitor = false\nbootstrap = false\ndemo_model = false\n"
        f'[local]\ncommand = ["{sys.executable}", "{STAND_IN}", "--no-model-check"]\n'
        '[[runtimes]]\nname = "edge"\nkind = "edge"\n'
        "[api]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in api.items())
    )
    port = free_port()
    log = tmp / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    if temp_dir is not None:
        env["TMPDIR"] = str(temp_dir)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stoic.cli", "serve", "--config", str(config),
             "--port", str(port)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit,
        )  # fmt: skip
    d = Daemon(proc, port, log, int(api.get("health_port", port)))
    try:
        deadline = time.monotonic() + 120
        while http_get(port, "/readyz")[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"daemon did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield d
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, float]:
    """(status or 0 on failure, seconds) of one GET on a new connection."""
    t = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        status = 0
    return status, time.perf_counter() - t


class Prober:
    """``GET /healthz`` on a new connection every 50 ms, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, seconds = http_get(self.port, "/healthz")
            if status == 200:
                self.latencies.append(seconds)
            else:
                self.failures[str(status or "timeout")] += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        xs = sorted(self.latencies)
        if not xs:
            return f"healthz: no answer (failures {dict(self.failures)})"

        def q(p: float) -> float:
            return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000

        return (
            f"healthz: {len(xs)} answers, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, "
            f"max {xs[-1] * 1000:.1f} ms, failures {dict(self.failures)}"
        )


@dataclass
class Result:
    name: str
    cpu_s: float
    peak_mb: float
    log_kb: float
    wall_s: float
    health: str
    answers: Counter[str] = field(default_factory=Counter)
    note: str = ""

    def print(self) -> None:
        print(f"== {self.name}")
        print(
            f"   daemon CPU {self.cpu_s:.2f} s, peak RSS +{self.peak_mb:.1f} MB, "
            f"log +{self.log_kb:.1f} KB, wall {self.wall_s:.1f} s"
        )
        print(f"   answers: {dict(self.answers)}" + (f"; {self.note}" if self.note else ""))
        print(f"   {self.health}")
        sys.stdout.flush()


def listen_overflows() -> int:
    """Connections the kernel dropped because a listen queue was full (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def measure(d: Daemon, name: str, attack: Callable[[Counter[str]], str]) -> Result:
    time.sleep(1.0)  # let the previous attack's connections go
    overflows = listen_overflows()
    base_rss = d.reset_peak()
    cpu0, log0, t0 = d.cpu_s(), d.log_bytes(), time.perf_counter()
    answers: Counter[str] = Counter()
    with Prober(d.probe_port) as prober:
        note = attack(answers)
        time.sleep(0.5)
    dropped = listen_overflows() - overflows
    if dropped:
        note += f"; kernel listen-queue overflows {dropped}"
    return Result(
        name,
        d.cpu_s() - cpu0,
        (d.status_kb("VmHWM") - base_rss) / 1024,
        (d.log_bytes() - log0) / 1024,
        time.perf_counter() - t0,
        prober.summary(),
        answers,
        note,
    )


# Hostile bodies ------------------------------------------------------------------------


def post_raw(port: int, body: bytes | Iterator[bytes], ctype: str, length: int | None = None,
             query: str = "", timeout_s: float = 120,
             target: str = "POST /v1/batches") -> tuple[int, int]:  # fmt: skip
    """POST /v1/batches (or ``target``) on a raw socket; (status or 0, body bytes sent).
    A body given as an iterator is sent until the daemon answers or closes; with
    ``length`` None, it is sent chunked (the iterator yields the chunks' framing)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        if isinstance(body, bytes):
            length = len(body)
        framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
        head = (
            f"{target}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"{framing}\r\n\r\n"
        ).encode()
        s.sendall(head)
        chunks = iter([body]) if isinstance(body, bytes) else body
        s.setblocking(False)
        reply = b""
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    n = s.send(view)
                    sent += n
                    view = view[n:]
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    break
                with contextlib.suppress(BlockingIOError, OSError):
                    got = s.recv(65536)
                    reply += got
                    if not got or b"\r\n\r\n" in reply:
                        break
            if reply:
                break
        s.setblocking(True)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in reply and (got := s.recv(65536)):
                reply += got
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = io.BytesIO()
    for name, filename, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


CTYPE = "multipart/form-data; boundary=b0und"


def junk_zip(members: int = 200, zeros: int = 2 * 1024 * 1024) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(buf, "JPEG")
    real = buf.getvalue()
    junk = real[: real.index(b"\xff\xda")] + b"\0" * zeros
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(members):
            zf.writestr(f"img-{i}.jpg", junk)
    return out.getvalue()


def huge_png(width: int = 12_000, height: int = 12_000, broken: bool = False) -> bytes:
    """A real PNG of zeros, built row by row (never held decoded); ``broken``: its
    data stream is cut short under correct CRCs (only a decode can tell)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    if broken:
        idat = idat[:-8]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def concurrently(n: int, fn: Callable[[], tuple[int, int]], answers: Counter[str]) -> None:
    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda: results.append(fn())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, _ in results:
        answers[str(status)] += 1


def attack_junk(d: Daemon, skip: bool) -> Callable[[Counter[str]], str]:
    body = multipart([("files", "junk.zip", junk_zip())])
    query = "?skip_invalid=true" if skip else ""

    def run(answers: Counter[str]) -> str:
        concurrently(6, lambda: post_raw(d.port, body, CTYPE, query=query), answers)
        return f"6 × {len(body) / 1000:.0f} KB zips of 200 junk JPEGs (2 MB of zeros each)"

    return run


def attack_png(d: Daemon) -> Callable[[Counter[str]], str]:
    png = huge_png()
    body = multipart([("files", "huge.png", png)])

    def run(answers: Counter[str]) -> str:
        concurrently(6, lambda: post_raw(d.port, body, CTYPE), answers)
        return f"6 × {len(png) / 1000:.0f} KB PNGs of 12,000 × 12,000 pixels"

    return run


def attack_png_under(d: Daemon) -> Callable[[Counter[str]], str]:
    png = huge_png(7_000, 7_000, broken=True)
    body = multipart([("files", "almost.png", png)])

    def run(answers: Counter[str]) -> str:
        concurrently(6, lambda: post_raw(d.port, body, CTYPE), answers)
        return f"6 × {len(png) / 1000:.0f} KB PNGs of 7,000 × 7,000 pixels, stream cut short"

    return run


def attack_fields(d: Daemon) -> Callable[[Counter[str]], str]:
    total = 2 * 1024**3

    def distinct() -> Iterator[bytes]:
        for i in range(total // 1024):
            yield (
                f'--b0und\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'
                + "x" * 900
                + "\r\n"
            ).encode()

    def endless() -> Iterator[bytes]:
        yield b'--b0und\r\nContent-Disposition: form-data; name="mode"\r\n\r\n'
        block = b"x" * 65536
        for _ in range(total // len(block)):
            yield block

    def run(answers: Counter[str]) -> str:
        notes = []
        for name, gen in (("distinct fields", distinct), ("one endless field", endless)):
            status, sent = post_raw(d.port, gen(), CTYPE, length=total)
            answers[str(status)] += 1
            notes.append(f"{name}: refused after {sent / 1e6:.2f} MB of 2,147 MB")
        return "; ".join(notes)

    return run


def attack_slowloris(
    d: Daemon, connections: int, duration_s: float
) -> Callable[[Counter[str]], str]:
    def run(answers: Counter[str]) -> str:
        socks: list[socket.socket] = []
        opened = dropped = refused = 0
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            while len(socks) < connections and time.monotonic() < deadline:
                try:
                    s = socket.create_connection(("127.0.0.1", d.port), timeout=2)
                    s.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    s.setblocking(False)
                    socks.append(s)
                    opened += 1
                except OSError:
                    refused += 1
            alive = []
            for s in socks:
                try:
                    if s.recv(1024) == b"":
                        raise ConnectionError
                    s.close()  # a 408: the daemon dropped it
                    dropped += 1
                except BlockingIOError:
                    alive.append(s)
                except OSError:
                    s.close()
                    dropped += 1
            socks = alive
            time.sleep(0.05)
        for s in socks:
            s.close()
        answers["408/closed"] = dropped
        answers["connect failed"] = refused
        return f"{opened} half-header connections opened ({connections} at a time)"

    return run


def attack_slowbody(d: Daemon) -> Callable[[Counter[str]], str]:
    def one() -> tuple[int, int]:
        head = b'--b0und\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
        return post_raw(d.port, iter([head + b"\xff\xd8\xff" + b"\0" * 100]), CTYPE, length=10**6)

    def run(answers: Counter[str]) -> str:
        concurrently(50, one, answers)
        return "50 bodies of 1 MB declared, 200 bytes sent"

    return run


def attack_hangup(d: Daemon) -> Callable[[Counter[str]], str]:
    def one() -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: " + CTYPE.encode() + b"\r\nContent-Length: 1000000\r\n\r\n"
                b'--b0und\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
                + b"\xff\xd8\xff"
                + b"\0" * 5000
            )
            time.sleep(0.05)
        return 0, 0

    def run(answers: Counter[str]) -> str:
        log0 = d.log_bytes()
        for _ in range(4):
            concurrently(50, one, answers)
        time.sleep(1.0)
        per = (d.log_bytes() - log0) / 200
        answers.clear()
        answers["hung up"] = 200
        return f"log: {per:.0f} bytes per hang-up (repeats folded by the log filter)"

    return run


# The operator page under pollers -----------------------------------------------------------


def seed_batches(d: Daemon, n: int) -> None:
    """``n`` finished batches on the edge in the daemon's database, one every 5 s up to
    now (so all of today's usage too), as a long-running site has them."""
    now = time.time()
    estimate = {"transfer_s": 0.0, "deployment_s": 0.0, "processing_s": 12.0, "total_s": 12.0}
    rows = []
    for i in range(n):
        at = now - (n - i) * 5.0
        rows.append(
            BatchTable(
                id=f"seed-{i:08d}", created_at=at, updated_at=at + 12, n_images=40,
                n_bytes=8_000_000, app="classify", app_version="1", mode="selector",
                package_key=f"batches/seed-{i:08d}/package.tar", state="done", attempts=1,
                chosen_runtime="edge", decision_reason="edge: fastest predicted T_s",
                estimates={"edge": estimate}, transfer_s=0.0, deployment_s=0.0,
                processing_s=12.5, total_s=12.5, winner="edge", cloud_used_s=0.0,
                cloud_wasted_s=0.0, results_key=None, skipped=[], started_at=at,
                finished_at=at + 12.5,
            )
        )  # fmt: skip
    url = f"sqlite:///{d.log.parent / 'data' / 'stoic.db'}"
    with Store(url) as store, Session(store.engine) as s:
        s.add_all(rows)
        s.commit()


@dataclass
class Phase:
    pollers: int
    seconds: float
    accepted: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    page_s: list[float] = field(default_factory=list)
    page_failures: int = 0
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


def ingest_phase(d: Daemon, body: bytes, seconds: float, pollers: int, period_s: float) -> Phase:
    """Uploads from 8 clients back to back for ``seconds`` while ``pollers`` clients fetch
    ``/ui`` every ``period_s``; only answers that arrive within the phase count."""
    phase = Phase(pollers, seconds)
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def upload() -> None:
        while not stop.is_set():
            status, _ = post_raw(d.port, body, CTYPE, timeout_s=60)
            if time.monotonic() > deadline:
                return
            with lock:
                phase.answers[str(status)] += 1
                phase.accepted += status == 202

    def poll(delay: float) -> None:
        stop.wait(delay)
        while not stop.is_set():
            t = time.monotonic()
            status, took = http_get(d.port, "/ui", timeout_s=60)
            with lock:
                if status == 200:
                    phase.page_s.append(took)
                else:
                    phase.page_failures += 1
            stop.wait(max(period_s - (time.monotonic() - t), 0.0))

    threads = [threading.Thread(target=upload, daemon=True) for _ in range(8)]
    threads += [
        threading.Thread(target=poll, args=(i * period_s / max(pollers, 1),), daemon=True)
        for i in range(pollers)
    ]
    cpu0 = d.cpu_s()
    for t in threads:
        t.start()
    time.sleep(seconds)
    phase.cpu_s = d.cpu_s() - cpu0
    stop.set()
    for t in threads:
        t.join()
    return phase


def page_pollers(d: Daemon, *, batches: int, pollers: int, period_s: float, phase_s: float) -> None:
    """What ``pollers`` clients polling the operator page cost ingest (issue 26, item 7)."""
    print(f"== operator page polled by {pollers} clients every {period_s:g} s, {batches} batches")
    t = time.perf_counter()
    seed_batches(d, batches)
    print(f"   seeded {batches} finished batches in {time.perf_counter() - t:.1f} s")
    rng = random.Random(7)
    images = []
    for i in range(4):
        buf = io.BytesIO()
        pixels = bytes(rng.getrandbits(8) for _ in range(96 * 72 * 3))
        Image.frombytes("RGB", (96, 72), pixels).save(buf, "JPEG", quality=90)
        images.append((f"cam-{i}.jpg", buf.getvalue()))
    body = multipart([("files", name, data) for name, data in images])
    status, took = http_get(d.port, "/ui", timeout_s=60)
    print(f"   one page render: {status}, {took * 1000:.0f} ms")
    rates: defaultdict[bool, list[float]] = defaultdict(list)
    for polled in (False, True, False, True):
        time.sleep(1.0)
        phase = ingest_phase(d, body, phase_s, pollers if polled else 0, period_s)
        rates[polled].append(phase.rate)
        page = ""
        if phase.page_s:
            xs = sorted(phase.page_s)
            page = (
                f"; /ui {len(xs)} fetches, p50 {xs[len(xs) // 2] * 1000:.0f} ms, "
                f"p99 {xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000:.0f} ms, "
                f"{phase.page_failures} failed"
            )
        print(
            f"   {'with' if polled else 'without'} pollers: {phase.rate:.1f} accepted/s, "
            f"answers {dict(phase.answers)}, daemon CPU {phase.cpu_s / phase_s:.2f} cores{page}"
        )
        sys.stdout.flush()
    without = sum(rates[False]) / len(rates[False])
    with_ = sum(rates[True]) / len(rates[True])
    print(
        f"   ingest {without:.1f} → {with_:.1f} accepted/s with the pollers: "
        f"cost {100 * (1 - with_ / without):.1f} % (bound 10 %)"
    )


# A full disk ----------------------------------------------------------------------------


def bench_disk_full(size_mb: int = 20, ballast_mb: int = 10, floor_mb: int = 0) -> None:
    """``stoic serve`` with its data directory on a ``size_mb`` MB tmpfs, of which a
    ballast file takes ``ballast_mb`` (a mount namespace made with ``unshare -Urm``: no
    root needed where user namespaces are allowed); ``objectstore.min_free_bytes`` is
    ``floor_mb`` MB (0: no floor, the worst case). 1.4 MB uploads with ``Content-Length``
    until one is refused (early: the disk has less than its length free), then 5 sent
    chunked (no length: they run into the real ``ENOSPC``), then the ballast is removed.
    Prints the answers and their latency, the daemon's CPU and log bytes, what
    ``/readyz`` said, the empty ``objects/batches/<id>/`` directories and temporary files
    left behind, and the seconds until ``/readyz`` and an upload succeed again once space
    is freed."""
    import httpx

    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m none $d && umount $d && rmdir $d"
    if subprocess.run(["unshare", "-Urm", "sh", "-c", probe], capture_output=True).returncode:
        print("== a full disk: skipped (no user and mount namespaces here)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-diskfull-"))
    data = tmp / "data"
    data.mkdir()
    config = tmp / "stoic.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        "[controller]\ninquisitor = false\nbootstrap = false\ndemo_model = false\n"
        "drain_grace_s = 0\n"
        f"[objectstore]\nmin_free_bytes = {floor_mb * 1_000_000}\n"
        f'[local]\ncommand = ["{sys.executable}", "{STAND_IN}", "--no-model-check", '
        '"--batch-delay", "600"]\n'
        '[[runtimes]]\nname = "edge"\nkind = "edge"\n'
    )
    port, log = free_port(), tmp / "daemon.log"
    script = (
        f"mount -t tmpfs -o size={size_mb}m none {data} && "
        f"head -c {ballast_mb}M /dev/zero > {data}/ballast && "
        f"exec {sys.executable} -m stoic.cli serve --config {config} --port {port}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c", script],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    d = Daemon(proc, port, log, port)
    inside = Path(f"/proc/{proc.pid}/root") / data.relative_to("/")
    noise = os.urandom(700_000)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 90, 160)).save(jpeg, "JPEG")
    request = httpx.Request(
        "POST", "/", files=[("files", (f"{i}.jpg", jpeg.getvalue() + noise)) for i in (1, 2)]
    )
    body, ctype = request.read(), request.headers["Content-Type"]
    try:
        deadline = time.monotonic() + 120
        while http_get(port, "/readyz")[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"daemon did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:

            def post(*, chunked: bool) -> tuple[int, float]:
                t = time.perf_counter()
                content = iter([body]) if chunked else body
                r = c.post("/v1/batches", content=content, headers={"Content-Type": ctype})
                return r.status_code, time.perf_counter() - t

            cpu0, log0 = d.cpu_s(), d.log_bytes()
            answers: Counter[str] = Counter()
            refused: list[float] = []
            for _ in range(30):  # with Content-Length, until one is refused
                status, seconds = post(chunked=False)
                answers[str(status)] += 1
                if status != 202:
                    refused.append(seconds)
                    break
            for _ in range(5):  # no length to refuse early on: the writes find the disk full
                status, seconds = post(chunked=True)
                answers[f"{status} chunked"] += 1
                if status != 202:
                    refused.append(seconds)
            ready = c.get("/readyz")
            cpu, logged = d.cpu_s() - cpu0, d.log_bytes() - log0
            batches = inside / "objects" / "batches"
            empty = [b for b in batches.iterdir() if not any(b.iterdir())]
            temps = list((inside / "tmp").glob(".tmp-*"))
            (inside / "ballast").unlink()
            t = time.perf_counter()
            while c.get("/readyz").status_code != 200 and time.perf_counter() - t < 30:
                time.sleep(0.05)
            ready_again = time.perf_counter() - t
            after = post(chunked=False)[0]
        refused.sort()
        print(f"== a full disk ({size_mb} MB tmpfs, floor {floor_mb} MB)")
        print(f"   answers: {dict(answers)}")
        print(
            f"   refusals: median {refused[len(refused) // 2] * 1000:.0f} ms, max "
            f"{refused[-1] * 1000:.0f} ms; daemon CPU {cpu:.2f} s, log +{logged / 1024:.1f} KB"
        )
        print(f"   /readyz when full: {ready.status_code} {ready.json()['checks']['disk']}")
        print(f"   left behind: {len(empty)} empty batch directories, {len(temps)} temporary files")
        print(f"   space freed: /readyz 200 after {ready_again:.2f} s; the next upload {after}")
        sys.stdout.flush()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Keep-alive under load (issue 26) --------------------------------------------------------


def attack_keepalive(
    d: Daemon, requests: int = 1000, concurrency: int = 100, images: int = 5
) -> Callable[[Counter[str]], str]:
    """``requests`` uploads of ``images`` noise JPEGs (~210 KB each) from one httpx
    client keeping ``concurrency`` connections alive: what matters is how many got no
    answer at all (a reset, or a close under a request the client had just sent)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    upload = [("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(images)]

    async def load(answers: Counter[str]) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        url = f"http://127.0.0.1:{d.port}"
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            slots = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with slots:
                    try:
                        r = await client.post("/v1/batches", files=upload)
                        answers[str(r.status_code)] += 1
                    except httpx.TransportError as exc:
                        answers[f"no answer ({type(exc).__name__})"] += 1

            await asyncio.gather(*(one() for _ in range(requests)))

    def dropped() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{d.port}/metrics", timeout=30).text
        prefix = "stoic_http_connections_dropped_total{reason="
        return {
            line[len(prefix) :].split("}")[0].strip('"'): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix)
        }

    def run(answers: Counter[str]) -> str:
        before = dropped()
        asyncio.run(load(answers))
        after = {k: v - before.get(k, 0.0) for k, v in dropped().items()}
        return (
            f"{requests} POSTs of {images} JPEGs over {concurrency} keep-alive connections; "
            f"connections the daemon dropped: { ({k: int(v) for k, v in after.items() if v}) }"
        )

    return run


# Bodies without the token (issue 26) --------------------------------------------------

TOKEN = "bench-token"


def temp_bytes(pid: int, temp: Path) -> int:
    """Bytes in ``temp``: of the files ``pid`` holds open there (deleted ones, as
    ``tempfile`` makes them, included) or of the files that lie there, whichever is more."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(str(temp)):
                held += os.stat(fd).st_size
    lying = sum(f.stat().st_size for f in temp.rglob("*") if f.is_file())
    return max(held, lying)


class TempWatch:
    """The most :func:`temp_bytes` read, every 10 ms, in a thread."""

    def __init__(self, pid: int, temp: Path) -> None:
        self.pid, self.temp, self.peak = pid, temp, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, temp_bytes(self.pid, self.temp))

    def __enter__(self) -> TempWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def attack_unauthenticated(d: Daemon, temp: Path) -> Callable[[Counter[str]], str]:
    mb = 1024 * 1024
    file_part = b'--b0und\r\nContent-Disposition: form-data; name="token"; filename="t.bin"\r\n\r\n'

    def body(first: bytes, total: int, chunked: bool) -> Iterator[bytes]:
        block = b"0" * (256 * 1024)
        for data in itertools.chain([first], itertools.repeat(block, total // len(block))):
            yield f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
        if chunked:
            yield b"0\r\n\r\n"

    cases = [
        ("PUT /v1/models/default", "300 MB JSON", "application/json", 300 * mb, False),
        ("PUT /v1/models/default", "300 MB JSON, chunked", "application/json", 300 * mb, True),
        ("POST /ui/login", "2 GB file part", CTYPE, 2048 * mb, False),
        ("POST /v1/batches", "2 GB file part", CTYPE, 2048 * mb, False),
    ]

    def run(answers: Counter[str]) -> str:
        notes = []
        with TempWatch(d.pid, temp) as watch:
            for target, what, ctype, total, chunked in cases:
                first = b'{"version": "' if ctype == "application/json" else file_part
                status, sent = post_raw(
                    d.port,
                    body(first, total, chunked),
                    ctype,
                    length=None if chunked else total + len(first),
                    target=target,
                )
                answers[str(status)] += 1
                notes.append(f"{target} ({what}): {status} after {sent / 1e6:.2f} MB sent")
        notes.append(f"temporary directory at most {watch.peak / 1e6:.1f} MB")
        return "; ".join(notes)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--attack", default="all")
    ap.add_argument("--nofile", type=int, default=1024, help="the daemon's descriptor limit")
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=20.0, help="slowloris seconds")
    ap.add_argument("--api", action="append", default=[], metavar="KEY=N", help="an api.* setting")
    ap.add_argument("--seed-batches", type=int, default=7_000, help="pollers: batches stored")
    ap.add_argument("--pollers", type=int, default=20, help="pollers: page pollers")
    ap.add_argument("--poll-period", type=float, default=1.0, help="pollers: seconds per poll")
    ap.add_argument("--phase", type=float, default=10.0, help="pollers: seconds per phase")
    ap.add_argument(
        "--health-port",
        action="store_true",
        help="give the daemon a health listener (api.health_port) and probe it there",
    )
    args = ap.parse_args()
    api: dict[str, int | str] = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.api)}
    if args.health_port:
        api["health_port"] = free_port()
    wanted = {
        "junk", "png", "slowloris", "fields", "slowbody", "hangup", "pollers", "diskfull",
        "keepalive", "unauthenticated",
    }  # fmt: skip
    if args.attack != "all":
        wanted = set(args.attack.split(","))
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    if wanted - {"unauthenticated"}:
        attack_open_daemon(args, api, wanted)
    if "unauthenticated" in wanted:
        temp = Path(tempfile.mkdtemp(prefix="bench-hostile-tmpdir-"))
        with daemon(args.nofile, {**api, "token": TOKEN}, temp_dir=temp) as d:
            print(f"daemon with a token: pid {d.pid}, RSS {d.status_kb('VmRSS') / 1024:.0f} MB")
            attack = attack_unauthenticated(d, temp)
            measure(d, "long bodies without the token", attack).print()
            status, _ = http_get(d.port, "/readyz")
            print(f"after: /readyz {status}, RSS {d.status_kb('VmRSS') / 1024:.0f} MB")
    if "diskfull" in wanted:
        bench_disk_full()
    print(f"load average after: {os.getloadavg()}")


def attack_open_daemon(
    args: argparse.Namespace, api: dict[str, int | str], wanted: set[str]
) -> None:
    """The attacks on a daemon without a token (its default)."""
    with daemon(args.nofile, api) as d:
        print(f"daemon pid {d.pid}, RSS {d.status_kb('VmRSS') / 1024:.0f} MB, nofile {args.nofile}")
        print(f"probing /healthz on port {d.probe_port} (the API on {d.port})")
        with Prober(d.probe_port) as idle:
            time.sleep(3)
        print(f"idle {idle.summary()}")
        plan: list[tuple[str, Callable[[Counter[str]], str]]] = []
        if "junk" in wanted:
            plan.append(("junk-JPEG zips", attack_junk(d, skip=False)))
            plan.append(("junk-JPEG zips, skip_invalid=true", attack_junk(d, skip=True)))
        if "png" in wanted:
            plan.append(("large-pixel PNGs", attack_png(d)))
            plan.append(("PNGs just under the pixel limit, broken", attack_png_under(d)))
        if "fields" in wanted:
            plan.append(("form-field floods", attack_fields(d)))
        if "slowbody" in wanted:
            plan.append(("bodies shorter than Content-Length", attack_slowbody(d)))
        if "hangup" in wanted:
            plan.append(("hang-ups mid-upload", attack_hangup(d)))
        if "keepalive" in wanted:
            plan.append(("uploads at concurrency 100, keep-alive", attack_keepalive(d)))
        if "slowloris" in wanted:
            plan.append(
                ("half-open connections", attack_slowloris(d, args.connections, args.duration))
            )
        for name, attack in plan:
            measure(d, name, attack).print()
        if "pollers" in wanted:
            page_pollers(
                d,
                batches=args.seed_batches,
                pollers=args.pollers,
                period_s=args.poll_period,
                phase_s=args.phase,
            )
        status, _ = http_get(d.port, "/readyz")
        print(f"after: /readyz {status}, RSS {d.status_kb('VmRSS') / 1024:.0f} MB")


if __name__ == "__main__":
    main()
