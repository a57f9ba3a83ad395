"""Probe packages: the daemon's images for the inquisitor's processing probes.

The inquisitor times the function on a small batch on pods it deploys anyway
(:mod:`stoic.schedule.probe.inquisitor`, "Processing probes"), so it needs images of the
application being served. They come from the batches themselves: the newest claimed
batch of the served version offers its package (:meth:`BatchProbeWork.offer`), and the
first ``n`` images of it are cut into a package of their own
(``probes/<app>/<version>/<n>/package.tar``) the first time a probe of that size needs
them. Each package is uploaded to a runtime once and the :class:`Upload` reused: on
Kubernetes the copy stays in the cloud store, so a probe moves nothing over the uplink
after its first. A new application version is probed with its own images.

Kept beside the dispatcher (which also cuts packages: the bootstrap's representative
jobs, :func:`cut_head`) because both read the store's packages, not the scheduler.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stoic.backends.base import Upload
from stoic.errors import StoicError
from stoic.ingest.builder import TMP_PREFIX
from stoic.logging import get_logger
from stoic.schedule.execute.legs import Placer
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import PackageWriter, iter_package
from stoic.store.store import BatchRecord
from stoic.values import Job, Runtime

log = get_logger(__name__)


def cut_head(objects: ObjectStore, src_key: str, dst_key: str, n: int, tmp_dir: Path) -> int:
    """Store the first ``n`` images of the package at ``src_key`` as a package at
    ``dst_key`` (streamed: only those images are read); returns its size in bytes."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    # The ingest's prefix: a file a crash leaves behind is swept at the next start.
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}cut-", suffix=".tar", dir=tmp_dir)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            PackageWriter(out) as writer,
            objects.open_read(src_key) as src,
        ):
            for i, (name, data) in enumerate(iter_package(src)):
                if i >= n:
                    break
                writer.add_bytes(name, data)
        n_bytes = Path(tmp).stat().st_size
        with open(tmp, "rb") as f:
            objects.put_stream(dst_key, f)
        return n_bytes
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _Source:
    app: str
    version: str
    package_key: str
    n_images: int


class BatchProbeWork:
    """:class:`~stoic.schedule.probe.inquisitor.ProbeWork` cut from the newest claimed batch."""

    def __init__(self, objects: ObjectStore, tmp_dir: Path) -> None:
        self.objects = objects
        self.tmp_dir = tmp_dir
        self._source: _Source | None = None
        self._jobs: dict[tuple[str, str, int], Job] = {}
        self._uploads: dict[tuple[str, str], Upload] = {}
        self._lock = asyncio.Lock()

    def offer(self, record: BatchRecord) -> None:
        """The dispatcher's hook: a batch was claimed; its images may serve probes."""
        if record.package_key and record.n_images > 0:
            self._source = _Source(
                record.app, record.app_version, record.package_key, record.n_images
            )

    async def prepare(
        self, runtime: Runtime, place: Placer, n_images: int
    ) -> tuple[Job, Upload] | None:
        source = self._source
        if source is None:
            return None
        async with self._lock:  # probes of several runtimes share the cut packages
            job = await self._job(source, n_images)
            if job is None:
                return None
            key = (runtime.name, job.package_key)
            upload = self._uploads.get(key)
            if upload is None:
                upload = await place(job)
                self._uploads[key] = upload
        return job, upload

    async def _job(self, source: _Source, n_images: int) -> Job | None:
        n = min(n_images, source.n_images)
        cached = self._jobs.get((source.app, source.version, n))
        if cached is not None:
            return cached
        key = f"probes/{source.app}/{source.version}/{n}/package.tar"
        try:
            n_bytes = await asyncio.to_thread(
                cut_head, self.objects, source.package_key, key, n, self.tmp_dir
            )
        except (StoicError, OSError) as exc:  # the batch's package is gone, say
            log.warning("probe package not cut", source=source.package_key, error=str(exc))
            return None
        job = Job(f"probe-{n}", n, n_bytes, source.app, source.version, package_key=key)
        self._jobs[(source.app, source.version, n)] = job
        return job
