"""Crash safety with real processes: ``kill -9`` the daemon while batches are queued
and running, restart it, and every accepted batch completes exactly once.

The runtimes are local processes, but running the stand-in function server
``tests/standin_function.py`` (the local backend's ``local.command`` setting) that
sleeps a little per call instead of loading TensorFlow, so the test is quick and
independent of TF. It lists the package it is given, so the results name the images
as the real function does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from stoic.store import Store
from stoic.values import BatchState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
N_BATCHES = 4

STAND_IN = Path(__file__).with_name("standin_function.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (seed * 40 % 256, 10, 200)).save(buf, "JPEG")
    return buf.getvalue()


def start(
    tmp: Path, config: Path, port: int, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stoic.cli", "serve", "--config", str(config),
             "--port", str(port)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def wait_healthy(url: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"daemon not ready; log:\n{log.read_text()[-3000:]}")


def standin_config(
    tmp: Path, data: Path, standin_args: str, *, edge_per_image_s: float = 0.1, extra: str = ""
) -> Path:
    """A settings file for ``stoic serve`` on the local backend with the stand-in function
    (``standin_args``: its options, as TOML list items) and no background work; ``extra``
    is appended (more runtimes, sections)."""
    config = tmp / "stoic.toml"
    config.write_text(
        f"""
data_dir = "{data}"

[controller]
inquisitor = false
bootstrap = false
demo_model = false
drain_grace_s = 5

[local]
command = ["{sys.executable}", "{STAND_IN}", "--no-model-check", {standin_args}]

[[runtimes]]
name = "edge"
kind = "edge"
prior_per_image_s = {edge_per_image_s}
prior_fixed_s = {1.0 if edge_per_image_s >= 0.1 else 0.1}
{extra}"""
    )
    return config


def reap_standins(pid_file: Path) -> None:
    """Kill the stand-ins a test's daemons started and a ``kill -9`` orphaned (only
    ours: the pid must still carry this pid file in its environment)."""
    pids = pid_file.read_text().split() if pid_file.exists() else []
    for pid in map(int, pids):
        environ = Path(f"/proc/{pid}/environ")
        with contextlib.suppress(OSError):
            if f"STANDIN_PIDFILE={pid_file}\0".encode() in environ.read_bytes():
                os.kill(pid, signal.SIGKILL)


def finished_events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "batch finished" and event.get("logger") == "stoic.controller":
                out.append(event)
    return out


def test_kill_9_then_restart_completes_every_batch_exactly_once(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    data = tmp_path / "data"
    config = standin_config(
        tmp_path,
        data,
        '"--batch-delay", "1.5"',
        extra='\n[[runtimes]]\nname = "cpu"\nkind = "cpu"\nprior_deploy_s = 100.0\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    env["STANDIN_PIDFILE"] = str(pid_file)
    log = tmp_path / "daemon.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = start(tmp_path, config, port, log, env)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(url, log)
        ids = []
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            for i in range(N_BATCHES):
                r = client.post(
                    "/v1/batches",
                    files=[
                        ("files", (f"b{i}-{k}.jpg", jpeg(i * 10 + k), "image/jpeg"))
                        for k in range(2)
                    ],
                )
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            # Kill while one batch runs and the others wait in the queue.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                running = client.get("/v1/batches", params={"state": "running"}).json()["batches"]
                if running:
                    break
                time.sleep(0.05)
            assert running, log.read_text()[-3000:]
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)

        with Store(f"sqlite:///{data / 'stoic.db'}") as store:
            states = {b: store.get_batch(b).state for b in ids}
        assert BatchState.RUNNING in states.values()
        assert BatchState.QUEUED in states.values()
        interrupted = [b for b, s in states.items() if s is BatchState.RUNNING]

        second = start(tmp_path, config, port, log, env)
        wait_healthy(url, log)
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = client.get("/v1/batches", params={"state": "done"}).json()["batches"]
                if len(done) == N_BATCHES:
                    break
                time.sleep(0.2)
            bodies = [client.get(f"/v1/batches/{b}").json() for b in ids]
        assert [b["state"] for b in bodies] == ["done"] * N_BATCHES, log.read_text()[-3000:]
        for i, b in enumerate(bodies):
            assert sorted(x["name"] for x in b["results"]) == [f"b{i}-0.jpg", f"b{i}-1.jpg"]
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        for p in (daemon, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        reap_standins(pid_file)  # stand-ins a kill -9 orphaned

    # Exactly once: one "finished" event per batch over both lives of the daemon, one
    # results object each, and the interrupted batch was claimed a second time.
    events = finished_events(log)
    assert sorted(str(e["batch_id"]) for e in events) == sorted(ids)
    assert all(e["state"] == "done" for e in events)
    assert "re-queued batches left running by a previous run" in log.read_text()
    with Store(f"sqlite:///{data / 'stoic.db'}") as store:
        for b in ids:
            record = store.get_batch(b)
            assert record.state is BatchState.DONE
            assert record.attempts == (2 if b in interrupted else 1)
    results = sorted((data / "objects" / "batches").glob("*/results.json"))
    assert len(results) == N_BATCHES
