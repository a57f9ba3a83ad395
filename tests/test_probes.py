"""The daemon's probe packages: cut from the newest claimed batch, uploaded once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from stoic.backends.base import Upload
from stoic.backends.fake import FakeBackend
from stoic.daemon.probes import BatchProbeWork
from stoic.schedule.execute.legs import Placer
from stoic.settings import Settings
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import iter_package, write_package
from stoic.store import Store, migrate
from stoic.store.store import BatchRecord
from stoic.values import Job

pytestmark = pytest.mark.looptime

RUNTIMES = {r.name: r for r in Settings().runtime_list()}


def _placer(backend: FakeBackend, runtime: str) -> Placer:
    """The measurer's unmeasured upload of a probe's images to ``runtime``."""

    async def place(job: Job) -> Upload:
        return await backend.upload(RUNTIMES[runtime], job)

    return place


def _batch(store: Store, objects: DirObjectStore, n: int, version: str = "1") -> BatchRecord:
    buf = io.BytesIO()
    write_package(buf, iter((f"img{i:03d}.jpg", b"x" * (100 + i)) for i in range(n)))
    key = f"batches/v{version}-{n}/package.tar"
    objects.put_stream(key, io.BytesIO(buf.getvalue()))
    return store.create_batch(
        created_at=0.0,
        n_images=n,
        n_bytes=len(buf.getvalue()),
        package_key=key,
        app_version=version,
    )


async def test_probe_packages_come_from_the_newest_claimed_batch(tmp_path: Path) -> None:
    objects = DirObjectStore(tmp_path / "objects")
    fake = FakeBackend()
    work = BatchProbeWork(objects, tmp_path / "tmp")
    gpu1 = _placer(fake, "gpu1")
    with Store("sqlite://") as store:
        migrate(store.engine)
        assert await work.prepare(RUNTIMES["gpu1"], gpu1, 10) is None  # nothing yet
        work.offer(_batch(store, objects, 30))
        job, upload = await work.prepare(RUNTIMES["gpu1"], gpu1, 10) or pytest.fail("none")
        assert (job.n_images, job.app, job.app_version) == (10, "classify", "1")
        with objects.open_read(job.package_key) as f:
            names = [name for name, _ in iter_package(f)]
        assert names == [f"img{i:03d}.jpg" for i in range(10)]  # the first ten
        assert job.n_bytes == objects.size(job.package_key)
        # Reused: one upload per runtime and package, however many probes.
        again = await work.prepare(RUNTIMES["gpu1"], gpu1, 10)
        assert again == (job, upload)
        await work.prepare(RUNTIMES["cpu"], _placer(fake, "cpu"), 10)
        big, _ = await work.prepare(RUNTIMES["gpu1"], gpu1, 100) or pytest.fail("none")
        assert big.n_images == 30  # no more images than the batch has
        assert [(e.runtime, e.batch_id) for e in fake.ops("upload")] == [
            ("gpu1", "probe-10"),
            ("cpu", "probe-10"),
            ("gpu1", "probe-30"),
        ]
        # A new version is probed with its own images.
        work.offer(_batch(store, objects, 12, version="2"))
        job2, _ = await work.prepare(RUNTIMES["gpu1"], gpu1, 10) or pytest.fail("none")
        assert job2.app_version == "2" and job2.package_key != job.package_key


async def test_a_vanished_source_package_means_no_probe(tmp_path: Path) -> None:
    objects = DirObjectStore(tmp_path / "objects")
    work = BatchProbeWork(objects, tmp_path / "tmp")
    with Store("sqlite://") as store:
        migrate(store.engine)
        record = _batch(store, objects, 5)
        objects.delete(record.package_key)
        work.offer(record)
        assert await work.prepare(RUNTIMES["gpu1"], _placer(FakeBackend(), "gpu1"), 10) is None
