"""The dispatcher: claims queued batches and runs each one end to end.

The controller builds one :class:`Dispatcher` per start and supervises its
:meth:`~Dispatcher.run` as the guarded task ``dispatcher``; this module knows nothing
of how the parts it is given were built, and the controller nothing of what a batch
goes through. Kept apart because the path of one batch is the daemon's main line
(DESIGN, "The path of one batch"), and it reads best without the start-up and drain
code around it.

Why it looks the way it does:

* **Claiming is the database's job.** ``Store.claim_next_queued`` moves a batch from
  ``queued`` to ``running`` atomically and counts the attempt, so a crash leaves the
  batch ``running`` and the next start re-queues it (or fails it after
  ``controller.max_attempts``). The loop only claims while fewer than
  ``controller.max_concurrent_batches`` run; each batch is a task kept in
  ``running: dict[batch_id, Task]``, which is what the controller's drain waits on
  and cancels. A claim that returns after the stop flag was set is handed back
  (``Store.release_claim``) instead of started: draining means no new batch starts.
* **Woken, not just polled.** The ingest calls :meth:`Dispatcher.notify` (through the
  controller) when it has queued a batch, and a finishing batch does too, so a free
  slot is filled at once; ``controller.poll_s`` only bounds how long a batch queued
  behind the dispatcher's back (another process, a re-queue) waits.
* **A batch never takes the loop down.** :meth:`Dispatcher._run_batch` finishes a
  failing batch as ``failed`` with its error and only lets cancellation through: a
  cancelled batch stays ``running`` in the database and is re-queued at the next
  start.
* **The model is made sure of first.** The ``prepare`` hook (the controller's: train
  the demo model if none is stored) runs once before the first claim, so batches
  accepted meanwhile wait in the queue instead of failing.
* **Bootstrapping (paper §3.7) is cut from the batch itself.** A new application
  version has no processing samples, so before its first batch is planned the
  scheduler's bootstrap runs on sub-packages of that batch (its first image and its
  first ten images), giving the T_p regression two points of its own. Every batch
  carries the version it was accepted with (``PUT /v1/models/default`` changes the
  version of the batches accepted after it), so a switch of version mid-queue is safe.
* **The results document is self-contained.** Each image's result is joined with what
  the ingest read of it (deployment, EXIF capture time and camera:
  :mod:`stoic.ingest.metadata`), so the exports and the operator page read one object.

The log events keep the logger name ``stoic.daemon.controller``: they are part of the
operating interface (``docs/operations.md``) and of what tests and tooling filter on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from stoic.clock import Clock
from stoic.daemon.metrics import Metrics
from stoic.daemon.probes import cut_head
from stoic.errors import BatchStateError, ObjectNotFound, StoicError
from stoic.ingest.metadata import annotate, parse_document
from stoic.logging import get_logger
from stoic.schedule.scheduler import Scheduler
from stoic.schedule.share.board import Chunk
from stoic.settings import Settings
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import (
    chunk_results_key,
    chunks_prefix,
    metadata_key,
    parts_prefix,
    results_key,
)
from stoic.store.store import BatchRecord, Store
from stoic.values import BatchState, Job, Mode, Outcome, Plan, SharePlan

log = get_logger("stoic.controller")

BOOTSTRAP_SIZES = (1, 10)
"""Images in the two representative bootstrap jobs (paper §3.7: "two representative
tasks"): the fixed cost of a call, and a point ten images further up the line."""


class Dispatcher:
    """Claims queued batches (at most ``controller.max_concurrent_batches`` at once)
    and runs each: bootstrap if needed, plan, record the decision, run the plan,
    store the results document, finish the batch, update the metrics.

    ``stopping`` tells whether the controller is draining (no new batch is claimed);
    ``prepare`` runs once before the first claim; ``prime(app, version)`` before each
    batch (the controller's: load what the store knows of that application version,
    so that only a version it has never seen is bootstrapped); ``claimed(record)``
    when a batch is claimed (the controller's: its images may serve the inquisitor's
    processing probes, :mod:`stoic.daemon.probes`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        metrics: Metrics,
        store: Store,
        objects: ObjectStore,
        scheduler: Scheduler,
        tmp_dir: Path,
        stopping: Callable[[], bool],
        prepare: Callable[[], Awaitable[None]],
        prime: Callable[[str, str], Awaitable[None]] | None = None,
        claimed: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.store = store
        self.objects = objects
        self.scheduler = scheduler
        self.tmp_dir = tmp_dir
        self._stopping = stopping
        self._prepare = prepare
        self._prime = prime
        self._claimed = claimed
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._prepared = False

    def notify(self) -> None:
        """A batch was queued (or a slot freed): look at the queue now rather than at
        the next poll."""
        self._wake.set()

    # The loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and start batches until the controller stops; returns when it does.
        Safe to call again after a crash (the supervisor does): ``prepare`` is not
        repeated once it has succeeded."""
        if not self._prepared:
            await self._prepare()
            self._prepared = True
        limit = self.settings.controller.max_concurrent_batches
        while not self._stopping():
            self._wake.clear()
            while len(self.running) < limit and not self._stopping():
                record = await self._claim()
                if record is None:
                    break
                if self._stopping():
                    # The stop flag was set while the claim was in flight: hand it back.
                    await asyncio.to_thread(self.store.release_claim, record.id, self.clock.now())
                    log.info("claim handed back: the daemon is draining", batch_id=record.id)
                    break
                task = asyncio.create_task(self._run_batch(record), name=f"batch:{record.id}")
                self.running[record.id] = task
                self.metrics.batches_running.set(len(self.running))
                task.add_done_callback(functools.partial(self._batch_done, record.id))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.controller.poll_s):
                    await self._wake.wait()

    async def _claim(self) -> BatchRecord | None:
        """Claim the next queued batch. If this task is cancelled while the claim runs
        in its thread, the claim is waited for and handed back, so no batch is left
        ``running`` without an owner (it would lose an attempt at the next start)."""
        claim = asyncio.ensure_future(
            asyncio.to_thread(self.store.claim_next_queued, self.clock.now())
        )
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            record = await claim
            if record is not None:
                await asyncio.to_thread(self.store.release_claim, record.id, self.clock.now())
            raise

    def _batch_done(self, batch_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(batch_id, None)
        self.metrics.batches_running.set(len(self.running))
        self.notify()

    # One batch -----------------------------------------------------------------------

    async def _run_batch(self, record: BatchRecord) -> None:
        """Decide, run, store results and measurements, finish. Never raises (except
        on cancellation): a failing batch is finished as ``failed`` with its error."""
        s = self.settings
        job = record.job()
        mode, pinned = record.mode, record.pinned_runtime
        if pinned is not None:
            mode = Mode.PINNED
        log.info(
            "batch claimed", batch_id=record.id, attempt=record.attempts, n_images=job.n_images
        )
        if self._claimed is not None:
            self._claimed(record)
        plan: Plan | None = None

        async def decided(p: Plan) -> None:
            nonlocal plan
            plan = p
            self.metrics.scheduling_overhead.observe(p.decision_s)
            self.metrics.decisions.labels(str(p.mode), p.chosen).inc()
            await asyncio.to_thread(
                self.store.record_decision,
                record.id,
                p.chosen,
                p.reason,
                dict(p.estimates),
                at=self.clock.now(),
            )

        try:
            if self._prime is not None:
                await self._prime(job.app, job.app_version)
            if s.controller.bootstrap and self.scheduler.needs_bootstrap(job.app, job.app_version):
                await self._bootstrap(record)
            done: dict[int, Any] = {}
            on_chunk = None
            if mode is Mode.SHARE:
                done = await asyncio.to_thread(self._load_chunks, record)
                on_chunk = functools.partial(self._store_chunk, record.id)
                if done:
                    log.info("share: resuming", batch_id=record.id, labelled_before=len(done))
            plan, outcome = await self.scheduler.handle(
                job, mode=mode, pinned=pinned, on_plan=decided, done=done, on_chunk=on_chunk
            )
        except asyncio.CancelledError:
            log.warning(
                "batch cancelled; it will be re-queued at the next start", batch_id=record.id
            )
            raise
        except StoicError as exc:
            await self._fail(record, plan, exc)
            return
        except Exception as exc:
            log.exception("batch crashed", batch_id=record.id)
            await self._fail(record, plan, exc)
            return
        await self._succeed(record, plan, outcome)

    # Share mode: results chunk by chunk -----------------------------------------------

    async def _store_chunk(
        self, batch_id: str, chunk: Chunk, runtime: str, results: Sequence[Any]
    ) -> None:
        """One object per finished chunk (written atomically), so that after a crash
        only the images without one are labelled again."""
        document = {
            "start": chunk.start,
            "stop": chunk.stop,
            "runtime": runtime,
            "results": [{**r, "runtime": runtime} for r in results],
        }
        key = chunk_results_key(batch_id, chunk.start, chunk.stop)
        await asyncio.to_thread(self.objects.put_bytes, key, json.dumps(document).encode())

    def _load_chunks(self, record: BatchRecord) -> dict[int, Any]:
        """The images a previous attempt labelled (index → result); an unreadable chunk
        object counts as not labelled."""
        done: dict[int, Any] = {}
        for key in self.objects.list(chunks_prefix(record.id)):
            try:
                doc = json.loads(self.objects.get_bytes(key))
                start, results = int(doc["start"]), list(doc["results"])
            except (StoicError, ValueError, KeyError, TypeError):
                log.warning("share: ignoring an unreadable chunk object", key=key)
                continue
            for i, r in enumerate(results):
                if 0 <= start + i < record.n_images:
                    done.setdefault(start + i, r)
        return done

    def _metadata(self, batch_id: str) -> dict[str, Any] | None:
        """What the ingest read of the batch's images (None for a batch without it)."""
        try:
            return parse_document(self.objects.get_bytes(metadata_key(batch_id)))
        except ObjectNotFound:
            return None

    async def _succeed(self, record: BatchRecord, plan: Plan, outcome: Outcome) -> None:
        key = results_key(record.id)
        metadata = await asyncio.to_thread(self._metadata, record.id)
        document = {
            "batch_id": record.id,
            "app": record.app,
            "app_version": record.app_version,
            "runtime": outcome.winner or outcome.runtime,
            "mode": str(plan.mode),
            "deployment": metadata.get("deployment") if metadata is not None else None,
            "n_images": record.n_images,
            "results": annotate(outcome.results or [], metadata),
        }
        if outcome.shares:
            document["shares"] = outcome.shares
            document["duplicate_images"] = outcome.duplicate_images
        data = json.dumps(document).encode()
        await asyncio.to_thread(self.objects.put_bytes, key, data)
        if isinstance(plan, SharePlan):  # the results document holds them all now
            await asyncio.to_thread(self.objects.delete_prefix, chunks_prefix(record.id))
            await asyncio.to_thread(self.objects.delete_prefix, parts_prefix(record.package_key))
        then = f"{plan.reason}; then: {outcome.reason}" if outcome.reason else None
        try:
            await asyncio.to_thread(
                self.store.finish_batch,
                record.id,
                state=BatchState.DONE,
                finished_at=self.clock.now(),
                transfer_s=outcome.transfer_s,
                deployment_s=outcome.deployment_s,
                processing_s=outcome.processing_s,
                total_s=outcome.total_s,
                winner=outcome.winner or outcome.runtime,
                cloud_used_s=outcome.cloud_used_s,
                cloud_wasted_s=outcome.cloud_wasted_s,
                results_key=key,
                error=outcome.error,
                decision_reason=then,
            )
        except BatchStateError as exc:
            log.error(
                "batch finished elsewhere; result not recorded", batch_id=record.id, error=str(exc)
            )
            return
        winner = outcome.winner or outcome.runtime
        estimate = plan.estimates.get(winner)
        self.metrics.observe_outcome(
            outcome,
            BatchState.DONE,
            planned_runtime=plan.chosen,
            predicted_total_s=estimate.total.mean if estimate is not None else None,
        )
        log.info(
            "batch finished",
            batch_id=record.id,
            state="done",
            runtime=winner,
            total_s=round(outcome.total_s, 3),
            transfer_s=round(outcome.transfer_s, 3),
            deployment_s=round(outcome.deployment_s, 3),
            processing_s=round(outcome.processing_s, 3),
            decision_ms=round(outcome.decision_s * 1000, 3),
        )

    async def _fail(self, record: BatchRecord, plan: Plan | None, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        try:
            await asyncio.to_thread(
                self.store.finish_batch,
                record.id,
                state=BatchState.FAILED,
                finished_at=self.clock.now(),
                error=message,
            )
        except StoicError as store_exc:
            log.error("could not record a failed batch", batch_id=record.id, error=str(store_exc))
            return
        self.metrics.batches_finished.labels("failed", plan.chosen if plan else "none").inc()
        log.warning("batch finished", batch_id=record.id, state="failed", error=message)

    # Bootstrapping -------------------------------------------------------------------

    async def _bootstrap(self, record: BatchRecord) -> None:
        """Run the scheduler's bootstrap with sub-packages of ``record``'s package."""
        jobs, keys = await asyncio.to_thread(self._representative_jobs, record)
        try:
            report = await self.scheduler.bootstrap(record.app, record.app_version, jobs)
            log.info(
                "bootstrap done",
                app=record.app,
                app_version=record.app_version,
                runs=report.runs,
                failures={k: len(v) for k, v in report.failures.items()},
            )
        finally:
            for key in keys:
                with contextlib.suppress(StoicError):
                    await asyncio.to_thread(self.objects.delete, key)

    def _representative_jobs(self, record: BatchRecord) -> tuple[list[Job], list[str]]:
        """Cut the first 1 and first ≤10 images of the package into packages of their
        own (streamed: only those images are read)."""
        sizes = sorted({min(n, record.n_images) for n in BOOTSTRAP_SIZES})
        jobs: list[Job] = []
        keys: list[str] = []
        for size in sizes:
            key = f"batches/{record.id}/bootstrap-{size}/package.tar"
            n_bytes = cut_head(self.objects, record.package_key, key, size, self.tmp_dir)
            keys.append(key)
            jobs.append(
                Job(
                    f"{record.id}:b{size}",
                    size,
                    n_bytes,
                    record.app,
                    record.app_version,
                    package_key=key,
                )
            )
        return jobs, keys
