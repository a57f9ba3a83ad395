"""Function processes left behind by a daemon killed with -9 are reaped at the next start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoic.backends.local import forget_process, reap_orphans, record_process


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, as the local backend starts a function; gone after."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_recorded_process_group_is_killed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    record_process(tmp_path, sleeper.pid)
    assert reap_orphans(tmp_path) == [sleeper.pid]
    assert sleeper.wait(timeout=10) == -9
    assert not list(tmp_path.glob("*.pid"))


def test_reused_pid_is_left_alone(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    # Same pid, another start time: an unrelated process that got the pid later.
    (tmp_path / f"{sleeper.pid}.pid").write_text(f"{sleeper.pid} 1\n")
    assert reap_orphans(tmp_path) == []
    assert sleeper.poll() is None
    assert not list(tmp_path.glob("*.pid"))


def test_forgotten_and_garbage_records(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    record_process(tmp_path, sleeper.pid)
    forget_process(tmp_path, sleeper.pid)
    (tmp_path / "junk.pid").write_text("not a pid")
    assert reap_orphans(tmp_path) == []
    assert sleeper.poll() is None
    assert reap_orphans(tmp_path / "missing") == []
