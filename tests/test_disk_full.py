"""A full disk (issue 26, item 6): uploads past full get 507 naming the disk, ``/readyz``
reports it, nothing is left behind, and uploads succeed again once space is freed.

Before, ``ENOSPC`` escaped the object store's write as a 500 with a traceback,
``/readyz`` stayed 200, and every refused upload left an empty ``objects/batches/<id>/``.

Three levels:

* the object store and the disk watch alone;
* the daemon in-process behind its HTTP API, on an object store whose writes find a
  small disk (:class:`SmallDisk`: ``ENOSPC`` raised from the store's own copy loop
  once the disk's bytes are used up, and its free space reported to ``/readyz``);
* ``stoic serve`` on a real 20 MB tmpfs (a mount namespace made with ``unshare``,
  no root needed where user namespaces are allowed; skipped where they are not),
  driven over loopback HTTP, its files read through ``/proc/PID/root``.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from stoic.api.app import create_app
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.daemon.controller import Controller
from stoic.errors import InsufficientStorage, StorageFull
from stoic.storage.disk import DiskWatch
from stoic.storage.objectstore import DirObjectStore
from tests.support.daemon import files
from tests.support.images import jpeg
from tests.support.net import free_port, tail
from tests.support.paths import REPO
from tests.support.processes import daemon_env, kill, reap_standins
from tests.support.settings import make_settings, standin_config

GB = 10**9


class SmallDisk:
    """A disk of ``size`` bytes under ``root``: used = the bytes of the files there."""

    def __init__(self, root: Path, size: int) -> None:
        self.root, self.size = root, size

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def free(self, path: Path) -> int:
        inside = path.resolve() == self.root or self.root in path.resolve().parents
        return max(0, self.size - self.used()) if inside else 10 * GB


class SmallDiskStore(DirObjectStore):
    """A directory store on a :class:`SmallDisk`: a write past its size fails as the
    kernel fails it, with ``ENOSPC`` after the bytes that fitted."""

    def __init__(self, disk: SmallDisk) -> None:
        super().__init__(disk.root)
        self.disk = disk

    def _copy(self, src: BinaryIO, out: BinaryIO) -> int:
        n = 0
        while chunk := src.read(4096):
            out.flush()
            room = self.disk.free(self.root)
            out.write(chunk[:room])
            if room < len(chunk):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n += len(chunk)
        return n


def leftovers(root: Path) -> list[str]:
    """Every directory and file under ``root``, relative."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# The object store and the disk watch ---------------------------------------------------


def test_a_write_that_finds_the_disk_full_leaves_nothing(tmp_path: Path) -> None:
    store = SmallDiskStore(SmallDisk(tmp_path / "objects", 10_000))
    store.put_bytes("batches/a/package.tar", b"x" * 6_000)
    with pytest.raises(StorageFull) as info:
        store.put_stream("batches/b/package.tar", io.BytesIO(b"y" * 6_000))
    assert str(tmp_path / "objects") in str(info.value) and "batches/b" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert leftovers(tmp_path / "objects") == ["batches", "batches/a", "batches/a/package.tar"]
    store.delete("batches/a/package.tar")
    assert store.put_stream("batches/b/package.tar", io.BytesIO(b"y" * 6_000)) == 6_000


def test_the_disk_watch_floor_failures_and_freed_space(tmp_path: Path) -> None:
    free = {"objects": 50_000_000}
    watch = DiskWatch({"object store": tmp_path}, 10_000_000, usage=lambda _path: free["objects"])
    watch.require_room(1_000_000)
    with pytest.raises(InsufficientStorage, match=r"disk of the object store \(50\.0 MB free"):
        watch.require_room(45_000_000)
    assert watch.full == []
    watch.failed("object store")  # a write found no space, above the floor (a quota)
    [state] = watch.full
    assert state.describe() == "object store: full, the last write found no space (50.0 MB free)"
    free["objects"] = 55_000_000  # growth below the floor's size: not freed yet
    assert watch.full
    free["objects"] = 60_000_000
    assert watch.full == []
    free["objects"] = 9_000_000
    [state] = watch.full
    assert state.describe() == (
        "object store: full, 9.0 MB free, below 10.0 MB (objectstore.min_free_bytes)"
    )
    watch.failed("object store")
    watch.written()  # an upload was stored: the failure is forgotten, the floor is not
    assert not watch.full[0].failed


# The daemon behind its API, on a small disk ---------------------------------------------


@asynccontextmanager
async def small_disk_daemon(
    tmp_path: Path, size: int, min_free_bytes: int
) -> AsyncIterator[tuple[httpx.AsyncClient, SmallDisk]]:
    disk = SmallDisk((tmp_path / "objects").resolve(), size)
    settings = make_settings(
        tmp_path,
        objectstore={"path": disk.root, "min_free_bytes": min_free_bytes},
        controller={"drain_grace_s": 0},
    )
    ctl = Controller(
        settings,
        backends={"local": FakeBackend(default=FakeSpec(per_image_s=3600))},  # results: none
        objects=SmallDiskStore(disk),
        disk_usage=disk.free,
    )
    app = create_app(settings, controller=ctl)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c,
    ):
        yield c, disk


async def upload(c: httpx.AsyncClient, seed: int) -> httpx.Response:
    return await c.post("/v1/batches", files=files(("a.jpg", jpeg(seed)), ("b.jpg", jpeg(-seed))))


async def test_uploads_past_a_full_disk_get_507_and_succeed_once_space_is_freed(
    tmp_path: Path,
) -> None:
    async with small_disk_daemon(tmp_path, size=30_000, min_free_bytes=0) as (c, disk):
        accepted: list[str] = []
        for seed in range(1, 30):
            r = await upload(c, seed)
            if r.status_code != 202:
                break
            accepted.append(r.json()["id"])
        assert accepted, "the disk took no upload at all"
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        assert "disk of the object store" in r.json()["error"]["message"]
        assert str(disk.root) not in r.text  # the path is for the log, not the client
        assert r.headers["Retry-After"] == str(InsufficientStorage.retry_after_s)
        assert (await upload(c, 99)).status_code == 507  # and the next one too

        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["disk"].startswith(
            "object store: full, the last write found no space"
        )
        metrics = (await c.get("/metrics")).text
        assert 'stoic_disk_full{disk="object store"} 1.0' in metrics
        assert 'stoic_ingest_rejected_total{code="insufficient_storage"} 2.0' in metrics
        # Nothing of the refused uploads: no directory, no temporary file, no row.
        expected = sorted(
            {"batches", "daemon", "daemon/lease.json"}
            | {f"batches/{b}" for b in accepted}
            | {f"batches/{b}/package.tar" for b in accepted}
            | {f"batches/{b}/metadata.json" for b in accepted}
            | {f"batches/{b}/thumbnails.tar" for b in accepted}
        )
        assert leftovers(disk.root) == expected
        listed = (await c.get("/v1/batches")).json()["batches"]
        assert sorted(b["id"] for b in listed) == sorted(accepted)

        disk.size += 2_000_000  # the operator frees space
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text
        r = await upload(c, 100)
        assert r.status_code == 202, r.text
        assert 'stoic_disk_full{disk="object store"} 0.0' in (await c.get("/metrics")).text


async def test_an_upload_that_would_leave_less_than_the_floor_is_refused_before_its_body(
    tmp_path: Path,
) -> None:
    async with small_disk_daemon(tmp_path, size=2_000_000, min_free_bytes=1_999_000) as (c, disk):
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text
        r = await upload(c, 1)
        assert r.status_code == 507, r.text
        assert "the upload needs" in r.json()["error"]["message"]
        assert leftovers(disk.root) == ["daemon", "daemon/lease.json"]  # nothing written
        disk.size = 3_000_000
        assert (await upload(c, 2)).status_code == 202
        disk.size = disk.used() + 1_000_000  # below the floor now
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert "below 2.0 MB (objectstore.min_free_bytes)" in ready.json()["checks"]["disk"]


# stoic serve on a real 20 MB tmpfs -----------------------------------------------------


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m none $d && umount $d && rmdir $d"
    result = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", probe], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


BALLAST_MB = 12


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="no user and mount namespaces here")
def test_stoic_serve_on_a_20_mb_tmpfs(tmp_path: Path) -> None:
    """The uploads are sent chunked (no ``Content-Length``), and no floor is set, so
    that they run into the real ``ENOSPC`` rather than the floor's early 507."""
    data = tmp_path / "data"  # a mount point: the tmpfs is mounted over it
    data.mkdir()
    config = standin_config(
        tmp_path,
        data,
        '"--batch-delay", "600"',  # no batch finishes: no results take space meanwhile
        extra="[objectstore]\nmin_free_bytes = 0\n",
    )
    script = (
        f"mount -t tmpfs -o size=20m none {data} && "
        f"head -c {BALLAST_MB}M /dev/zero > {data}/ballast && "
        f"exec {sys.executable} -m stoic.cli serve --config {config} --port {{port}}"
    )
    port, log, pids = free_port(), tmp_path / "daemon.log", tmp_path / "pids"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c", script.format(port=port)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=daemon_env(STANDIN_PIDFILE=str(pids)),
        )  # fmt: skip
    inside = Path(f"/proc/{daemon.pid}/root") / data.relative_to("/")
    noise = os.urandom(700_000)  # does not compress: 0.7 MB a file, 1.4 MB an upload
    upload = httpx.Request(
        "POST", "/", files=[("files", (f"{i}.jpg", jpeg(i) + noise, "image/jpeg")) for i in (1, 2)]
    )
    body, content_type = upload.read(), upload.headers["Content-Type"]

    def post(c: httpx.Client) -> httpx.Response:
        chunked = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
        return c.post("/v1/batches", content=chunked, headers={"Content-Type": content_type})

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as c:
            _wait_ready(c, daemon, log)
            answers: list[int] = []
            for _ in range(20):
                r = post(c)
                answers.append(r.status_code)
                if r.status_code != 202:
                    break
            assert answers.count(202) >= 2 and answers[-1] == 507, (answers, tail(log))
            assert r.json()["error"]["code"] == "insufficient_storage"
            assert r.headers["Retry-After"] == str(InsufficientStorage.retry_after_s)
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert "full, the last write found no space" in ready.json()["checks"]["disk"]
            # No empty batches/<id>/ of a refused upload; no temporary file.
            batches = inside / "objects" / "batches"
            assert [d for d in batches.iterdir() if not any(d.iterdir())] == []
            assert len(list(batches.iterdir())) == answers.count(202)
            assert not list((inside / "tmp").glob(".tmp-*"))
            assert "Traceback" not in log.read_text()

            (inside / "ballast").unlink()  # the operator frees space
            assert c.get("/readyz").status_code == 200
            assert post(c).status_code == 202
    finally:
        kill(daemon)
        reap_standins(pids)


def _wait_ready(c: httpx.Client, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert daemon.poll() is None, tail(log)
        assert time.monotonic() < deadline, tail(log)
        try:
            if c.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
