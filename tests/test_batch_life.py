"""A batch's life against a failing store and through restarts, in-process.

* A database locked past its busy timeout, or a full disk, when a batch is claimed or
  finished: the write is retried with back-off, the batch reaches ``done`` once the
  store takes it (no restart), and ``stoic_batches_running`` counts it meanwhile. A
  share chunk that cannot be stored is skipped.
* Attempts count only runs that failed without progress: a drain hands the batch back,
  a share run that stored chunks before a crash is not counted, and a batch that does
  fail leaves no chunk objects behind.

The real restarts (``kill -9`` and SIGTERM of ``stoic serve``) are in
``tests/test_restarts.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from stoic.backends.base import Deployment, Invocation, Upload
from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.daemon import chunks
from stoic.daemon.controller import Controller
from stoic.schedule.share.board import Chunk
from stoic.settings import Settings
from stoic.storage.objectstore import make_object_store
from stoic.storage.package import chunks_prefix, results_key
from stoic.store import Store
from stoic.values import BatchState, Job, Mode
from tests.support.controller import put_batch, started, until, wait_state
from tests.support.settings import make_settings


@dataclass(slots=True)
class GatedBackend(FakeBackend):
    """The fake, but a batch's (non-warm-up) call returns only once ``gate`` is set:
    the test decides when the batch finishes."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        if not warmup:
            await self.gate.wait()
        return await FakeBackend.invoke(self, deployment, job, upload, warmup=warmup)


def outage_settings(tmp_path: Path, **controller: Any) -> Settings:
    """A short busy timeout and short back-offs, so a locked database fails fast and
    the retries come quickly."""
    return make_settings(
        tmp_path,
        database={"busy_timeout_s": 0.05},
        controller={"store_retry_initial_s": 0.01, "store_retry_max_s": 0.05, **controller},
    )


def sample(ctl: Controller, name: str, **labels: str) -> float:
    value = ctl.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@contextlib.contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """A second connection holding the database's write lock (``BEGIN EXCLUSIVE``)."""
    path = settings.database_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        con.execute("BEGIN EXCLUSIVE")
        yield
        con.execute("ROLLBACK")
    finally:
        con.close()


# Defect 3: a failing store --------------------------------------------------------------


async def test_a_batch_that_finishes_while_the_database_is_locked_is_done_once_it_is_not(
    tmp_path: Path,
) -> None:
    settings = outage_settings(tmp_path)
    bid = put_batch(settings)
    backend = GatedBackend(default=FakeSpec(per_image_s=0.0))
    async with started(settings, backend) as ctl:
        await wait_state(ctl, bid, BatchState.RUNNING)
        await until(lambda: ctl.store.get_batch(bid).chosen_runtime is not None)  # decided
        with locked(settings):
            backend.gate.set()  # the batch finishes while another connection holds the lock
            await until(
                lambda: sample(ctl, "stoic_store_write_failures_total", write="finish") >= 3
            )
            # Meanwhile: still running in the store, and the metrics say so.
            assert (await asyncio.to_thread(ctl.store.get_batch, bid)).state is BatchState.RUNNING
            assert sample(ctl, "stoic_batches_running") == 1
            assert sample(ctl, "stoic_batches_unrecorded") == 1
        record = await wait_state(ctl, bid, BatchState.DONE, BatchState.FAILED)
        assert record.state is BatchState.DONE, record.error
        assert record.results_key == results_key(bid)
        await until(lambda: sample(ctl, "stoic_batches_running") == 0)
        assert sample(ctl, "stoic_batches_unrecorded") == 0
        assert sample(ctl, "stoic_task_restarts_total", task="dispatcher") == 0


async def test_a_claim_refused_by_a_locked_database_is_retried(tmp_path: Path) -> None:
    settings = outage_settings(tmp_path, poll_s=3600)
    backend = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with started(settings, backend) as ctl:
        bid = put_batch(settings)  # queued behind the dispatcher's back
        with locked(settings):
            ctl.notify()
            await until(lambda: sample(ctl, "stoic_store_write_failures_total", write="claim") >= 3)
            assert (await asyncio.to_thread(ctl.store.get_batch, bid)).state is BatchState.QUEUED
        record = await wait_state(ctl, bid, BatchState.DONE, BatchState.FAILED)
        assert record.state is BatchState.DONE, record.error
        assert sample(ctl, "stoic_task_restarts_total", task="dispatcher") == 0


@pytest.mark.parametrize("where", ["database", "objects"])
async def test_a_batch_that_finishes_on_a_full_disk_is_done_once_space_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    settings = outage_settings(tmp_path)
    bid = put_batch(settings)
    backend = GatedBackend(default=FakeSpec(per_image_s=0.0))
    disk = {"full": True, "refused": 0}
    async with started(settings, backend) as ctl:
        if where == "database":

            @event.listens_for(ctl.store.engine, "before_cursor_execute")
            def full(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
                if (
                    disk["full"]
                    and statement.startswith("UPDATE batches")
                    and "finished_at" in statement
                ):
                    disk["refused"] += 1
                    raise sqlite3.OperationalError("database or disk is full")

        else:
            objects = type(ctl.objects)
            put = objects.put_bytes

            def full_put(self: Any, key: str, data: bytes) -> None:
                if disk["full"] and key == results_key(bid):
                    disk["refused"] += 1
                    raise OSError(errno.ENOSPC, "No space left on device")
                put(self, key, data)

            monkeypatch.setattr(objects, "put_bytes", full_put)
        await wait_state(ctl, bid, BatchState.RUNNING)
        backend.gate.set()
        await until(lambda: disk["refused"] >= 3)
        assert (await asyncio.to_thread(ctl.store.get_batch, bid)).state is BatchState.RUNNING
        assert sample(ctl, "stoic_batches_running") == 1
        assert sample(ctl, "stoic_batches_unrecorded") == 1
        disk["full"] = False  # space freed
        record = await wait_state(ctl, bid, BatchState.DONE, BatchState.FAILED)
        assert record.state is BatchState.DONE, record.error
        assert ctl.objects.exists(results_key(bid))
        await until(lambda: sample(ctl, "stoic_batches_running") == 0)


# Defect 4: attempts ---------------------------------------------------------------------


async def test_a_share_run_that_stored_chunks_before_a_crash_is_not_counted(
    tmp_path: Path,
) -> None:
    """Two share batches were running when the daemon died, each already at
    ``max_attempts``: the one whose run stored a chunk resumes and finishes (its
    shares adding up); the other made no progress in that run, fails, and leaves no
    chunk objects."""
    settings = make_settings(
        tmp_path, controller={"max_attempts": 1}, policy={"share_min_gain_s": 0}
    )
    moving = put_batch(settings, n_images=20, mode=Mode.SHARE)
    stuck = put_batch(settings, n_images=20, mode=Mode.SHARE)
    objects = make_object_store(settings)
    results = [{"index": i, "label": "earlier"} for i in range(5)]
    with Store(settings.database_url) as store:
        claimed = {r.id: r for r in (store.claim_next_queued(10.0 + i) for i in range(2)) if r}
    chunks.store_chunk(objects, claimed[moving], Chunk(0, 5), "edge", results)
    # The stuck batch's only chunk was stored by an earlier run, not the one that died.
    earlier_run = dataclasses.replace(claimed[stuck], started_at=5.0)
    chunks.store_chunk(objects, earlier_run, Chunk(0, 5), "edge", results)

    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with started(settings, fake) as ctl:
        done = await wait_state(ctl, moving, BatchState.DONE, BatchState.FAILED)
        gave_up = await wait_state(ctl, stuck, BatchState.DONE, BatchState.FAILED)
    assert done.state is BatchState.DONE, done.error
    assert done.attempts == 1  # the run that progressed was not counted; this one was
    document = json.loads(objects.get_bytes(results_key(moving)))
    assert sorted(r["index"] for r in document["results"]) == list(range(20))
    assert sum(document["shares"].values()) == 20 and document["shares"]["edge"] >= 5
    assert gave_up.state is BatchState.FAILED
    assert "gave up after 1 attempt(s)" in (gave_up.error or "")
    assert objects.list(chunks_prefix(stuck)) == []
    assert objects.list(chunks_prefix(moving)) == []


async def test_a_failed_share_batch_leaves_no_chunk_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, runtimes=[{"name": "edge", "kind": "edge"}])
    bid = put_batch(settings, n_images=40, mode=Mode.SHARE)
    fake = FakeBackend(default=FakeSpec(per_image_s=0.001))
    fake.script_invokes("edge", InvokeStep(0.0), InvokeStep(0.0, fail=True))
    objects = make_object_store(settings)
    stored: list[str] = []
    put = type(objects).put_bytes

    def spy(self: Any, key: str, data: bytes) -> None:
        put(self, key, data)
        stored.append(key)

    monkeypatch.setattr(type(objects), "put_bytes", spy)
    async with started(settings, fake) as ctl:
        record = await wait_state(ctl, bid, BatchState.DONE, BatchState.FAILED)
    assert record.state is BatchState.FAILED
    assert any(k.startswith(chunks_prefix(bid)) for k in stored)  # stored before it failed ...
    assert objects.list(chunks_prefix(bid)) == []  # ... and went with the batch


async def test_a_share_batch_whose_chunks_cannot_be_stored_still_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk objects only save work after a crash: a full disk skips them, it does
    not fail the batch."""
    settings = make_settings(tmp_path, runtimes=[{"name": "edge", "kind": "edge"}])
    bid = put_batch(settings, n_images=40, mode=Mode.SHARE)
    objects = make_object_store(settings)
    put = type(objects).put_bytes
    refused: list[str] = []

    def full(self: Any, key: str, data: bytes) -> None:
        if key.startswith(chunks_prefix(bid)):
            refused.append(key)
            raise OSError(errno.ENOSPC, "No space left on device")
        put(self, key, data)

    monkeypatch.setattr(type(objects), "put_bytes", full)
    async with started(settings, FakeBackend(default=FakeSpec(per_image_s=0.001))) as ctl:
        record = await wait_state(ctl, bid, BatchState.DONE, BatchState.FAILED)
        failures = sample(ctl, "stoic_store_write_failures_total", write="chunk")
    assert record.state is BatchState.DONE, record.error
    assert len(refused) >= 2 and failures == len(refused)
    document = json.loads(objects.get_bytes(results_key(bid)))
    assert sorted(r["index"] for r in document["results"]) == list(range(40))
