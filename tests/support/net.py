"""Loopback ports and waiting for a server to answer.

A server started by a test answers some time later; the tests poll for it with a
deadline and fail with the end of the server's log, which is where the reason is.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    client: httpx.Client,
    path: str,
    timeout_s: float,
    log: Path,
    process: subprocess.Popen[bytes] | None = None,
) -> httpx.Response:
    """The first 200 answer to ``GET path``; fails with the log's tail after
    ``timeout_s``, or at once when ``process`` (the server) has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = client.get(path)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited ({process.returncode}); log:\n{tail(log)}")
        time.sleep(0.2)
    raise AssertionError(f"{path} not ready in {timeout_s} s; log:\n{tail(log)}")


def wait_healthy(
    url: str, log: Path, timeout_s: float = 60, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the daemon at ``url`` is ready (``/readyz``)."""
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
        wait_for(client, "/readyz", timeout_s, log, process)


def tail(log: Path, n_chars: int = 4000) -> str:
    """The end of a server's log, where the reason it failed is."""
    return log.read_text()[-n_chars:]
