"""Function processes left behind by a daemon killed with -9 are reaped at the next start."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stoic.backends.local import forget_process, reap_orphans, record_process


def _spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_recorded_process_group_is_killed(tmp_path: Path) -> None:
    proc = _spawn()
    try:
        record_process(tmp_path, proc.pid)
        assert reap_orphans(tmp_path) == [proc.pid]
        assert proc.wait(timeout=10) == -9
        assert not list(tmp_path.glob("*.pid"))
    finally:
        proc.kill()
        proc.wait()


def test_reused_pid_is_left_alone(tmp_path: Path) -> None:
    proc = _spawn()
    try:
        # Same pid, another start time: an unrelated process that got the pid later.
        (tmp_path / f"{proc.pid}.pid").write_text(f"{proc.pid} 1\n")
        assert reap_orphans(tmp_path) == []
        assert proc.poll() is None
        assert not list(tmp_path.glob("*.pid"))
    finally:
        proc.kill()
        proc.wait()


def test_forgotten_and_garbage_records(tmp_path: Path) -> None:
    proc = _spawn()
    try:
        record_process(tmp_path, proc.pid)
        forget_process(tmp_path, proc.pid)
        (tmp_path / "junk.pid").write_text("not a pid")
        assert reap_orphans(tmp_path) == []
        assert proc.poll() is None
        assert reap_orphans(tmp_path / "missing") == []
    finally:
        proc.kill()
        proc.wait()
