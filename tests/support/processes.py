"""``stoic serve`` as a child process, and cleaning up after it; a command's refusal as
a user meets it (:func:`cli_error_line`).

A test that kills the daemon with ``-9`` orphans the function processes it started; the
stand-in function writes its pid to ``STANDIN_PIDFILE`` so the test can reap exactly
those (:func:`reap_standins`) and leave the machine as it found it. :class:`Serving`
does both for a test that starts, kills and restarts one daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port, wait_healthy
from tests.support.paths import REPO

STOIC = (sys.executable, "-m", "stoic.cli")


def cli_error_line(*args: str) -> str:
    """The one line ``stoic *args`` writes to stderr when it refuses its input, run in a
    child through :func:`stoic.cli.main` as the ``stoic`` script runs it; the exit code
    must be 2 and there must be no traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", "from stoic.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def daemon_env(**extra: str) -> dict[str, str]:
    """This process's environment without the ``STOIC_*`` variables (a developer's own
    settings must not reach a test's daemon), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    env.update(extra)
    return env


def serve(
    config: Path,
    port: int,
    log: Path,
    env: dict[str, str],
    *args: str,
    stoic: Sequence[str] = STOIC,
    cwd: Path = REPO,
) -> subprocess.Popen[bytes]:
    """``stoic serve --config config --port port *args``, its output appended to ``log``
    (a restarted daemon writes after the first one's lines)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*stoic, "serve", "--config", str(config), "--port", str(port), *args],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], timeout_s: float = 90) -> int:
    """SIGTERM, as an operator stops the daemon; its exit status. Killed, and the test
    failed, when it does not exit within ``timeout_s``."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(process)
        raise


def kill(*processes: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL those of ``processes`` still running, and wait for them."""
    for p in processes:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()


def reap_standins(pid_file: Path) -> None:
    """Kill the stand-ins a test's daemons started and a ``kill -9`` orphaned (only
    ours: the pid must still carry this pid file in its environment)."""
    pids = pid_file.read_text().split() if pid_file.exists() else []
    for pid in map(int, pids):
        environ = Path(f"/proc/{pid}/environ")
        with contextlib.suppress(OSError):
            if f"STANDIN_PIDFILE={pid_file}\0".encode() in environ.read_bytes():
                os.kill(pid, signal.SIGKILL)


class Serving:
    """``stoic serve`` of one settings file, started and restarted on one port with one
    log; the stand-ins it runs record their pids (``env``: more variables for them). On
    the way out, whatever still runs is killed, orphaned stand-ins too."""

    def __init__(self, tmp: Path, config: Path, **env: str) -> None:
        self.config = config
        self.log = tmp / "daemon.log"
        self.pid_file = tmp / "pids"
        self.env = daemon_env(STANDIN_PIDFILE=str(self.pid_file), **env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """A daemon, once it is ready."""
        process = serve(self.config, self.port, self.log, self.env)
        self._started.append(process)
        wait_healthy(self.url, self.log, process=process)
        return process

    def __enter__(self) -> Serving:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        kill(*self._started)
        reap_standins(self.pid_file)
