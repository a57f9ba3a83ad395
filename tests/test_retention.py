"""Retention (stoic.daemon.retention): what the sweep deletes, what it never touches, the
disk usage it measures, and when its task runs. The sweep reads an injected clock;
the task's periods run under looptime: nothing here sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stoic.clock import ManualClock
from stoic.daemon.metrics import Metrics
from stoic.daemon.retention import DAY_S, Retention
from stoic.errors import BatchNotFound, StoreError
from stoic.settings import RetentionSettings, Settings
from stoic.storage.objectstore import DirObjectStore, walk_usage
from stoic.storage.package import metadata_key, package_key, results_key
from stoic.store.migrate import migrate
from stoic.store.store import Store
from stoic.values import BatchState
from tests.support.daemon import start_daemon
from tests.support.s3 import S3Server
from tests.support.settings import make_settings

NOW = 1_750_000_000.0
PACKAGE = b"p" * 5_000


class Site:
    """A data directory with a store, a directory object store, a clock and metrics."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        url = f"sqlite:///{self.data_dir / 'stoic.db'}"
        migrate(url)
        self.store = Store(url)
        self.objects = DirObjectStore(self.data_dir / "objects")
        self.clock = ManualClock(NOW)
        self.metrics = Metrics()

    def retention(self, **settings: Any) -> Retention:
        return Retention(
            RetentionSettings(**settings),
            data_dir=self.data_dir,
            store=self.store,
            objects=self.objects,
            clock=self.clock,
            metrics=self.metrics,
        )

    def batch(self, name: str, *, age_days: float, state: BatchState, ran_s: float = 60.0) -> str:
        """A batch uploaded ``age_days`` ago with its package (and, once done, its
        results and a share sub-package a crash left), brought to ``state``."""
        created = NOW - age_days * DAY_S
        self.store.create_batch(
            batch_id=name,
            created_at=created,
            n_images=1,
            n_bytes=len(PACKAGE),
            package_key=package_key(name),
        )
        self.objects.put_bytes(package_key(name), PACKAGE)
        self.objects.put_bytes(metadata_key(name), b'{"images": []}')
        if state is BatchState.QUEUED:
            return name
        claimed = self.store.claim_next_queued(created)
        assert claimed is not None and claimed.id == name
        if state is BatchState.RUNNING:
            return name
        self.objects.put_bytes(f"batches/{name}/parts/000000-000001.tar", PACKAGE)
        self.objects.put_bytes(results_key(name), b'{"labels": []}')
        self.store.finish_batch(
            name, state=state, finished_at=created + ran_s, results_key=results_key(name)
        )
        return name

    def keys(self, name: str) -> list[str]:
        return self.objects.list(f"batches/{name}/")

    def gauge(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def kept(name: str) -> list[str]:
    """What a finished batch keeps when its package goes: results and image metadata."""
    return sorted([metadata_key(name), results_key(name)])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.store.close()


async def test_packages_older_than_n_days_go_results_stay(site: Site) -> None:
    done = site.batch("old-done", age_days=31, state=BatchState.DONE)
    failed = site.batch("old-failed", age_days=45, state=BatchState.FAILED)
    young = site.batch("young-done", age_days=29, state=BatchState.DONE)
    retention = site.retention(packages_days=30)

    report = await retention.sweep()

    assert (report.packages, report.batches) == (2, 0)
    for name in (done, failed):
        assert site.keys(name) == kept(name)  # package and sub-package gone
        assert site.store.get_batch(name).results_key == results_key(name)  # row kept
    assert package_key(young) in site.keys(young)
    assert site.gauge("stoic_retention_deleted_total", what="package") == 2

    site.clock.advance(2 * DAY_S)  # now the young one is 31 days old
    assert (await retention.sweep()).packages == 1
    assert site.keys(young) == kept(young)
    assert site.gauge("stoic_retention_last_sweep_timestamp_seconds") == site.clock.now()


async def test_a_cancelled_batch_is_swept_like_a_failed_one(site: Site) -> None:
    site.store.create_batch(
        batch_id="cancelled", created_at=NOW - 40 * DAY_S, n_images=1, n_bytes=1,
        package_key=package_key("cancelled"),
    )  # fmt: skip
    site.objects.put_bytes(package_key("cancelled"), PACKAGE)
    site.store.cancel_batch("cancelled", NOW - 40 * DAY_S, "cancelled by token")
    report = await site.retention(packages_days=30).sweep()
    assert (report.packages, report.batches) == (1, 0)
    assert site.keys("cancelled") == []
    assert site.store.get_batch("cancelled").state is BatchState.CANCELLED
    assert (await site.retention(packages_days=30, results_days=35).sweep()).batches == 1
    with pytest.raises(BatchNotFound):
        site.store.get_batch("cancelled")


async def test_a_queued_or_running_batch_keeps_its_package_however_old(site: Site) -> None:
    running = site.batch("running", age_days=300, state=BatchState.RUNNING)
    queued = site.batch("queued", age_days=400, state=BatchState.QUEUED)
    report = await site.retention(packages_days=1, results_days=1).sweep()
    assert (report.packages, report.batches) == (0, 0)
    for name in (queued, running):
        assert site.keys(name) == sorted([metadata_key(name), package_key(name)])
        assert site.store.get_batch(name).state in (BatchState.QUEUED, BatchState.RUNNING)


async def test_a_batch_retried_after_the_query_keeps_its_package(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep asks again right before it deletes: a batch queued again (an
    operator's retry) between its query and the deletion keeps its package."""
    name = site.batch("retried", age_days=40, state=BatchState.FAILED)
    asked = site.store.finished_created_before

    def then_retried(ids: list[str], before: float) -> list[str]:
        found = asked(ids, before)
        monkeypatch.setattr(site.store, "finished_created_before", lambda *_: [])
        return found

    monkeypatch.setattr(site.store, "finished_created_before", then_retried)
    assert (await site.retention(packages_days=30).sweep()).packages == 0
    assert package_key(name) in site.keys(name)


async def test_objects_of_a_batch_without_a_row_are_kept(site: Site) -> None:
    """An upload in flight writes its package before its row."""
    site.objects.put_bytes("batches/in-flight/package.tar", PACKAGE)
    await site.retention(packages_days=1, results_days=1).sweep()
    assert site.keys("in-flight") == ["batches/in-flight/package.tar"]


async def test_results_are_kept_unless_results_days_is_set(site: Site) -> None:
    ancient = site.batch("ancient", age_days=3650, state=BatchState.DONE)
    assert (await site.retention().sweep()).batches == 0  # the defaults
    assert site.store.get_batch(ancient).state is BatchState.DONE
    assert site.keys(ancient) == kept(ancient)

    recent = site.batch("recent", age_days=6, state=BatchState.DONE)
    failed = site.batch("failed", age_days=8, state=BatchState.FAILED)
    queued = site.batch("queued", age_days=100, state=BatchState.QUEUED)
    report = await site.retention(packages_days="forever", results_days=7).sweep()

    assert (report.packages, report.batches) == (0, 2)
    for name in (ancient, failed):
        with pytest.raises(BatchNotFound):
            site.store.get_batch(name)
        assert site.keys(name) == []
    assert site.store.get_batch(recent).state is BatchState.DONE
    assert package_key(recent) in site.keys(recent)
    assert package_key(queued) in site.keys(queued)
    assert site.gauge("stoic_retention_deleted_total", what="batch") == 2


async def test_usage_metrics_follow_the_disk(site: Site) -> None:
    name = site.batch("b", age_days=31, state=BatchState.DONE)
    retention = site.retention(packages_days=30)
    before = walk_usage(site.objects.root)

    await retention.sweep()

    objects = walk_usage(site.objects.root)
    assert objects.bytes == before.bytes - 2 * len(PACKAGE)  # the package and its part
    assert site.gauge("stoic_objectstore_bytes") == objects.bytes
    assert site.gauge("stoic_objectstore_objects") == objects.objects == 2
    assert site.gauge("stoic_data_dir_bytes") == walk_usage(site.data_dir).bytes
    assert site.keys(name) == kept(name)

    (site.data_dir / "logs").mkdir()
    (site.data_dir / "logs" / "big.log").write_bytes(b"l" * 10_000)
    data = site.gauge("stoic_data_dir_bytes")
    await retention.measure(listing=False)
    assert site.gauge("stoic_data_dir_bytes") == (data or 0) + 10_000


@pytest.mark.s3
@pytest.mark.slow
async def test_an_s3_store_is_listed_at_sweeps_only(site: Site, s3_server: S3Server) -> None:
    site.objects = s3_server.store()  # type: ignore[assignment]
    site.objects.delete_prefix("")
    site.objects.put_bytes("models/classify/1/model.keras", b"m" * 700)
    retention = site.retention()
    await retention.measure(listing=False)
    assert site.gauge("stoic_objectstore_bytes") == 0  # not listed between sweeps
    assert site.gauge("stoic_data_dir_bytes") == walk_usage(site.data_dir).bytes
    await retention.sweep()
    assert site.gauge("stoic_objectstore_bytes") == 700
    assert site.gauge("stoic_objectstore_objects") == 1


class Recording(Retention):
    """The task's schedule, with sweeps and measurements recorded (loop time) instead
    of done; ``fail`` sweeps raise a store error first."""

    def __init__(self, site: Site, fail: int = 0, **settings: Any) -> None:
        r = site.retention(**settings)
        super().__init__(
            r.settings,
            data_dir=r.data_dir,
            store=r.store,
            objects=r.objects,
            clock=r.clock,
            metrics=r.metrics,
        )
        self.fail = fail
        self.sweeps: list[float] = []
        self.measures: list[float] = []

    async def sweep(self) -> Any:
        now = asyncio.get_running_loop().time()
        if self.fail:
            self.fail -= 1
            raise StoreError("database is locked")
        self.sweeps.append(now)

    async def measure(self, *, listing: bool) -> None:
        self.measures.append(asyncio.get_running_loop().time())


@pytest.mark.looptime
async def test_the_task_sweeps_at_start_then_daily_and_measures_between(site: Site) -> None:
    r = Recording(site, sweep_period_s=DAY_S, usage_period_s=3_600)
    start = asyncio.get_running_loop().time()
    task = asyncio.create_task(r.run())
    await asyncio.sleep(2 * DAY_S + 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [t - start for t in r.sweeps] == [0, DAY_S, 2 * DAY_S]
    assert [t - start for t in r.measures] == [h * 3_600.0 for h in range(1, 48) if h != 24]


@pytest.mark.looptime
async def test_a_failed_sweep_is_tried_again_at_the_next_measurement(site: Site) -> None:
    r = Recording(site, fail=2, sweep_period_s=DAY_S, usage_period_s=600)
    start = asyncio.get_running_loop().time()
    task = asyncio.create_task(r.run())
    await asyncio.sleep(1_300)
    assert not task.done()  # not crashed: a locked database is worth another try
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [t - start for t in r.sweeps] == [1_200]
    assert r.measures == []


async def test_the_daemon_runs_the_sweep_and_exports_its_usage(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with start_daemon(settings) as d:
        assert "retention" in d.controller._tasks
        deadline = time.monotonic() + 60
        values: dict[str, float] = {}
        while time.monotonic() < deadline:
            text = (await d.client.get("/metrics")).text
            values = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            if values["stoic_retention_last_sweep_timestamp_seconds"]:
                break
            await asyncio.sleep(0.05)
        assert values["stoic_retention_last_sweep_timestamp_seconds"] > 0
        assert values["stoic_data_dir_bytes"] > 0  # the database at least
        assert "stoic_objectstore_bytes" in values


def test_forever_is_none() -> None:
    s = Settings(retention={"packages_days": "forever", "results_days": 10})
    assert s.retention.packages_days is None
    assert s.retention.results_days == 10
    assert Settings().retention.packages_days == 30
    assert Settings().retention.results_days is None
