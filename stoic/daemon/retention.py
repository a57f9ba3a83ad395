"""Retention: the sweep that keeps an edge disk from filling, and the disk usage metrics.

Every accepted batch leaves its package (the uploaded images, ~0.2 MB each) in the
object store, and an edge box has one small disk. The sweep (:meth:`Retention.sweep`,
a supervised task of the controller: at start, then every
``retention.sweep_period_s``, a day) deletes:

* **packages** (``retention.packages_days``, default 30): the package of a finished
  (done, failed or cancelled) batch, with whatever else of it is not its result or its image
  metadata (share mode's sub-packages, bootstrap cuts a crash left), that many days
  after its upload. Why 30:
  the Sedgwick camera traps (paper §3.5) average about 600 images a day, so a month of
  packages is about 4 GB, which fits a small edge disk beside the model and the
  database, while a month is long enough to look at, or run again, a batch whose
  labels someone doubts;
* **batches** (``retention.results_days``, default none: kept): a finished batch
  whole, its database row and its results, that many days after it finished. Results
  are small and are what the site is for, so they stay unless asked.

Never deleted: anything of a queued or running batch (the store returns finished
batches only, and asks again right before each deletion, so a batch retried meanwhile
keeps its package); objects under ``batches/<id>/`` with no row (an upload in flight
writes its package before its row); models; probe packages. A batch's objects go
before its row, so a sweep that fails half-way leaves a row to find next time, never
objects nobody points to.

Disk usage (:meth:`Retention.measure`): the data directory and a directory object
store are walked every ``retention.usage_period_s`` (cheap: a stat per file, in a
worker thread); an S3 bucket is listed at each sweep only (a request per 1,000
objects). ``docs/operations.md``, "Retention".
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from stoic.clock import Clock
from stoic.daemon.metrics import Metrics
from stoic.daemon.retry import transient
from stoic.logging import get_logger
from stoic.settings import RetentionSettings
from stoic.storage.objectstore import DirObjectStore, ObjectStore, walk_usage
from stoic.storage.package import batch_prefix
from stoic.store.store import Store

log = get_logger("stoic.retention")

DAY_S = 86_400.0

BATCHES = "batches/"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep deleted: batches whose package went, whole batches that went."""

    packages: int
    batches: int


def _kept(rest: str) -> bool:
    """``rest`` (a key below ``batches/<id>/``) is kept with the results: the results,
    share mode's chunk results, the ingest's image metadata (small, and joined into
    the results)."""
    return rest in ("results.json", "metadata.json") or rest.startswith("chunks/")


def package_keys(keys: list[str]) -> dict[str, list[str]]:
    """The keys under ``batches/`` that the package sweep deletes, by batch id."""
    out: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        batch_id, _, rest = key.removeprefix(BATCHES).partition("/")
        if rest and not _kept(rest):
            out[batch_id].append(key)
    return dict(out)


@dataclass(eq=False)
class Retention:
    """The sweep and the disk usage measurements of one daemon."""

    settings: RetentionSettings
    _: KW_ONLY
    data_dir: Path
    store: Store
    objects: ObjectStore
    clock: Clock
    metrics: Metrics

    async def run(self) -> None:
        """Sweep now and every ``sweep_period_s``; measure the local disk usage every
        ``usage_period_s`` in between. A sweep the storage fails is logged and tried
        again at the next measurement, not crashed on."""
        s = self.settings
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + s.sweep_period_s
                try:
                    await self.sweep()
                except Exception as exc:
                    if not transient(exc):
                        raise
                    log.warning("retention sweep failed; tried again later", error=str(exc))
                    next_sweep = loop.time() + s.usage_period_s
            else:
                await self.measure(listing=False)
            await asyncio.sleep(max(0.0, min(s.usage_period_s, next_sweep - loop.time())))

    async def sweep(self) -> SweepReport:
        """Delete what the settings say has expired, then measure the disk usage."""
        now = self.clock.now()
        s = self.settings
        packages = batches = 0
        if s.results_days is not None:
            batches = await self._expire_batches(now - s.results_days * DAY_S)
        if s.packages_days is not None:
            packages = await self._expire_packages(now - s.packages_days * DAY_S)
        await self.measure(listing=True)
        self.metrics.retention_last_sweep.set(self.clock.now())
        report = SweepReport(packages, batches)
        if packages or batches:
            log.info("retention sweep", packages=packages, batches=batches)
        return report

    async def _expire_packages(self, created_before: float) -> int:
        keys = package_keys(await asyncio.to_thread(self.objects.list, BATCHES))
        expired = await asyncio.to_thread(
            self.store.finished_created_before, list(keys), created_before
        )
        n = 0
        for batch_id in expired:
            if not await self._finished(batch_id):
                continue
            for key in keys[batch_id]:
                await asyncio.to_thread(self.objects.delete, key)
            self.metrics.retention_deleted.labels("package").inc()
            n += 1
        return n

    async def _expire_batches(self, finished_before: float) -> int:
        n = 0
        for batch_id in await asyncio.to_thread(self.store.finished_before, finished_before):
            if not await self._finished(batch_id):
                continue
            await asyncio.to_thread(self.objects.delete_prefix, batch_prefix(batch_id))
            if await asyncio.to_thread(
                self.store.delete_finished_before, batch_id, finished_before
            ):
                self.metrics.retention_deleted.labels("batch").inc()
                n += 1
        return n

    async def _finished(self, batch_id: str) -> bool:
        """Asked again right before a batch's objects go: a retry may have queued it
        since the sweep's query."""
        ids = await asyncio.to_thread(self.store.finished_created_before, [batch_id], float("inf"))
        return bool(ids)

    async def measure(self, *, listing: bool) -> None:
        """Walk the data directory (and a directory object store) into the usage
        gauges; list the bucket of any other store too when ``listing``."""
        data = await asyncio.to_thread(walk_usage, self.data_dir)
        self.metrics.data_dir_bytes.set(data.bytes)
        if listing or isinstance(self.objects, DirObjectStore):
            objects = await asyncio.to_thread(self.objects.usage)
            self.metrics.objectstore_bytes.set(objects.bytes)
            self.metrics.objectstore_objects.set(objects.objects)
