"""One daemon per data directory (issue 13, point 1).

Two real ``stoic serve`` processes on one data dir: the second exits at once, with one
line naming the first one's pid, before it touches anything (the first one's running
batch stays running, its temporary upload file stays); ``kill -9`` of the first leaves
the directory usable. Controllers built in-process obey the same lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.daemon.controller import Controller
from stoic.daemon.lock import LOCK_NAME, DataDirLock
from stoic.errors import DataDirInUse
from stoic.ingest.builder import TMP_PREFIX
from stoic.store import Store, migrate
from stoic.values import BatchState
from tests.support.client import submit, wait_state
from tests.support.images import jpeg
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.processes import STOIC, Serving, stop
from tests.support.settings import make_settings, standin_config


def test_lock_is_exclusive_names_the_holder_and_is_released(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "data")
    first.acquire()
    first.acquire()  # idempotent for the holder
    with pytest.raises(DataDirInUse) as info:
        DataDirLock(tmp_path / "data").acquire()
    assert f"pid {os.getpid()}" in str(info.value)
    assert str((tmp_path / "data").resolve()) in str(info.value)
    first.release()
    with DataDirLock(tmp_path / "data") as again:
        assert again.held
    assert (tmp_path / "data" / LOCK_NAME).exists()  # never deleted, only emptied


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code = (
        "import sys, time; from pathlib import Path; from stoic.daemon.lock import DataDirLock;"
        f"DataDirLock(Path({str(data)!r})).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"locked"
        with pytest.raises(DataDirInUse, match=f"pid {child.pid}"):
            DataDirLock(data).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with DataDirLock(data) as lock:  # the kernel dropped the lock with the process
        assert lock.held


async def test_a_second_controller_fails_before_touching_anything(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    migrate(settings.database_url)
    # What a second start-up would destroy: a running batch (it would be re-queued and
    # run twice at once) and an in-flight upload's temporary file (it would be deleted).
    with Store(settings.database_url) as store:
        bid = store.create_batch(created_at=1.0, n_images=1, n_bytes=1, package_key="k").id
        store.claim_next_queued(2.0)
    tmp = settings.data_dir / "tmp" / f"{TMP_PREFIX}in-flight.tar"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"upload in progress")
    with DataDirLock(settings.data_dir):  # the first daemon
        second = Controller(settings, backends={"local": FakeBackend()})
        with pytest.raises(DataDirInUse, match=f"pid {os.getpid()}"):
            await second.start()
        assert not second.lock.held
    assert tmp.read_bytes() == b"upload in progress"
    with Store(settings.database_url) as store:
        assert store.get_batch(bid).state is BatchState.RUNNING
    # Once the directory is free, a controller starts and releases it when stopped.
    ctl = Controller(settings, backends={"local": FakeBackend(default=FakeSpec(per_image_s=0))})
    await ctl.start()
    assert ctl.lock.held
    with pytest.raises(DataDirInUse):
        DataDirLock(settings.data_dir).acquire()
    await ctl.stop()
    assert not ctl.lock.held
    with DataDirLock(settings.data_dir) as free:
        assert free.held


def _config(tmp_path: Path, data: Path) -> Path:
    return standin_config(tmp_path, data, '"--batch-delay", "30"')


@pytest.mark.slow
def test_two_stoic_serve_on_one_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = _config(tmp_path, data)
    with Serving(tmp_path, config) as serving:
        first = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            bid = submit(client, [("a.jpg", jpeg(1))])
            wait_state(client, bid, "running", log=serving.log)
        tmp = data / "tmp" / f"{TMP_PREFIX}in-flight.tar"
        tmp.write_bytes(b"an upload in progress")

        started = time.monotonic()
        result = subprocess.run(
            [*STOIC, "serve", "--config", str(config), "--port", str(free_port())],
            cwd=REPO,
            env=serving.env,
            capture_output=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
        stderr = result.stderr.decode().strip()
        assert result.returncode == 2, stderr
        assert stderr.splitlines() == [
            f"stoic: error: data dir {data.resolve()} is in use by another stoic daemon "
            f"(pid {first.pid} host {os.uname().nodename}); stop that daemon first or pass "
            "another --data-dir"
        ]
        assert elapsed < 30  # "at once": no migration, no start-up, no port bind
        # Nothing of the first daemon's was touched.
        assert tmp.read_bytes() == b"an upload in progress"
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            assert client.get(f"/v1/batches/{bid}").json()["state"] == "running"
            assert client.get("/readyz").status_code == 200

        # kill -9: the kernel releases the lock; a new daemon starts on the same dir.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = serving.start()
        assert (data / LOCK_NAME).read_text().startswith(f"pid {second.pid} ")
        assert stop(second) == 0
        assert (data / LOCK_NAME).read_text() == ""
