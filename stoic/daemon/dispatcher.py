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
  ``controller.max_attempts`` runs that died without progress). The loop only claims
  while fewer than ``controller.max_concurrent_batches`` run; each batch is a task
  kept in ``running: dict[batch_id, Task]``, which is what the controller's drain
  waits on and cancels. A claim that returns after the stop flag was set is handed
  back (``Store.release_claim``) instead of started: draining means no new batch starts.
* **Woken, not just polled.** The ingest calls :meth:`Dispatcher.notify` (through the
  controller) when it has queued a batch, and a finishing batch does too, so a free
  slot is filled at once; ``controller.poll_s`` only bounds how long a batch queued
  behind the dispatcher's back (another process, a re-queue) waits.
* **A batch never takes the loop down.** :meth:`Dispatcher._run_batch` finishes a
  failing batch as ``failed`` with its error and only lets cancellation through. A
  drain's cancellation is not the batch's fault: the batch is handed back to the queue
  with its attempt not counted (a share batch keeps its stored chunks and resumes).
* **A result is not lost to a failing store.** Once a batch has run, what it came to
  (:class:`Done` or :class:`Failed`) stays in memory, and each write that records it
  (the decision if it was refused earlier, the results document, the finish) is
  retried with back-off until it lands (:mod:`stoic.daemon.retry`): a database locked
  past its busy timeout or a full disk delays the batch, it does not strand it
  ``running`` with no owner. Meanwhile it counts in ``stoic_batches_running`` and
  ``stoic_batches_unrecorded``. A failed claim is retried the same way. The batch
  tasks are watched: one that ends with an exception anyway is logged, not left for
  asyncio to report as "never retrieved".
* **The model is made sure of first.** The ``prepare`` hook (the controller's: train
  the demo model if none is stored) runs once before the first claim, so batches
  accepted meanwhile wait in the queue instead of failing.
* **Bootstrapping (paper §3.7) is cut from the batch itself.** A new application
  version has no processing samples, so before its first batch is planned the
  scheduler's bootstrap runs on sub-packages of that batch (its first image and its
  first ten images), giving the T_p regression two points of its own. Every batch
  carries the version it was accepted with (``PUT /v1/models/default`` changes the
  version of the batches accepted after it), so a switch of version mid-queue is safe.

The log events keep the logger name ``stoic.daemon.controller``: they are part of the
operating interface (``docs/operations.md``) and of what tests and tooling filter on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stoic.clock import Clock
from stoic.daemon import chunks
from stoic.daemon.metrics import Metrics
from stoic.daemon.probes import cut_head
from stoic.daemon.retry import Backoff, transient, until_written
from stoic.errors import BatchNotFound, BatchStateError, StoicError
from stoic.logging import get_logger
from stoic.schedule.scheduler import Scheduler
from stoic.schedule.share.board import Chunk
from stoic.settings import Settings
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import results_key
from stoic.store.store import BatchRecord, Store
from stoic.values import BatchState, Job, Mode, Outcome, Plan, SharePlan

log = get_logger("stoic.controller")

T = TypeVar("T")

BOOTSTRAP_SIZES = (1, 10)
"""Images in the two representative bootstrap jobs (paper §3.7: "two representative
tasks"): the fixed cost of a call, and a point ten images further up the line."""


@dataclass(frozen=True, slots=True)
class Done:
    """A batch that ran to its end, held in memory until the store has it."""

    plan: Plan
    outcome: Outcome
    decision_stored: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """A batch that failed (``plan``: None when it failed before one was made)."""

    plan: Plan | None
    error: str
    decision_stored: bool


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
        self._backoff = Backoff.from_settings(settings.controller)

    def notify(self) -> None:
        """A batch was queued (or a slot freed): look at the queue now rather than at
        the next poll."""
        self._wake.set()

    # The loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and start batches until the controller stops; returns when it does.
        Safe to call again after a crash (the supervisor does): ``prepare`` is not
        repeated once it has succeeded. A claim the store cannot take (locked, full)
        is tried again after a back-off."""
        if not self._prepared:
            await self._prepare()
            self._prepared = True
        limit = self.settings.controller.max_concurrent_batches
        delays: Iterator[float] | None = None
        while not self._stopping():
            self._wake.clear()
            while len(self.running) < limit and not self._stopping():
                try:
                    record = await self._claim()
                except StoicError as exc:
                    if not transient(exc):
                        raise
                    delays = delays or self._backoff.delays()
                    delay = next(delays)
                    self._retrying("claim", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                delays = None
                if record is None:
                    break
                if self._stopping():
                    # The stop flag was set while the claim was in flight: hand it back.
                    await self._release(record, "claim handed back: the daemon is draining")
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
            with contextlib.suppress(StoicError):
                record = await claim
                if record is not None:
                    await self._release(record, "claim handed back: the dispatcher was cancelled")
            raise

    async def _release(self, record: BatchRecord, event: str) -> None:
        """Hand a claimed batch back to the queue, its attempt not counted. One try: a
        store that refuses leaves it ``running``, and the next start re-queues it."""
        try:
            await asyncio.to_thread(self.store.release_claim, record.id, self.clock.now())
        except (BatchStateError, BatchNotFound):
            return  # finished after all (its last write landed as it was cancelled)
        except StoicError as exc:
            log.warning(
                "could not hand the batch back; the next start re-queues it",
                batch_id=record.id,
                error=str(exc),
            )
            return
        log.info(event, batch_id=record.id)

    def _batch_done(self, batch_id: str, task: asyncio.Task[None]) -> None:
        self.running.pop(batch_id, None)
        self.metrics.batches_running.set(len(self.running))
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "batch task crashed; the batch stays running until the next start",
                batch_id=batch_id,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        self.notify()

    def _retrying(self, write: str, exc: BaseException, delay: float, **keys: Any) -> None:
        self.metrics.store_write_failures.labels(write).inc()
        log.warning(
            "store write failed; retrying",
            write=write,
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=round(delay, 3),
            **keys,
        )

    async def _write(self, write: str, record: BatchRecord, fn: Callable[[], T]) -> T:
        """``fn`` in a thread, retried with back-off until the store takes it."""
        return await until_written(
            fn,
            backoff=self._backoff,
            on_retry=functools.partial(self._retrying, write, batch_id=record.id),
        )

    # One batch -----------------------------------------------------------------------

    async def _run_batch(self, record: BatchRecord) -> None:
        """Run the batch, then record how it ended, however long the store takes to
        accept it. Never raises but on cancellation (a drain), which hands the batch
        back to the queue; a result that cannot be recorded at all (not a storage
        failure: those are retried) finishes the batch as ``failed`` with that error."""
        try:
            ran = await self._work(record)
            self.metrics.batches_unrecorded.inc()
            try:
                await self._record(record, ran)
            except Exception as exc:
                log.exception("recording the batch failed", batch_id=record.id)
                await self._record(
                    record, Failed(ran.plan, f"{type(exc).__name__}: {exc}", ran.decision_stored)
                )
            finally:
                self.metrics.batches_unrecorded.dec()
        except asyncio.CancelledError:
            await self._release(record, "batch cancelled by the drain; handed back to the queue")
            raise

    async def _work(self, record: BatchRecord) -> Done | Failed:
        """Decide and run: bootstrap if needed, plan, run the plan. The decision is
        stored once when it is made; if the store refuses it then, it is stored with
        the result."""
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
        stored = False

        async def decided(p: Plan) -> None:
            nonlocal plan, stored
            plan = p
            self.metrics.scheduling_overhead.observe(p.decision_s)
            self.metrics.decisions.labels(str(p.mode), p.chosen).inc()
            try:
                await asyncio.to_thread(self._store_decision, record, p)
            except StoicError as exc:
                if not transient(exc):
                    raise
                log.warning(
                    "decision not stored yet; it will be with the result",
                    batch_id=record.id,
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                stored = True

        try:
            if self._prime is not None:
                await self._prime(job.app, job.app_version)
            if s.controller.bootstrap and self.scheduler.needs_bootstrap(job.app, job.app_version):
                await self._bootstrap(record)
            done: dict[int, Any] = {}
            on_chunk = None
            if mode is Mode.SHARE:
                done = await asyncio.to_thread(chunks.load_chunks, self.objects, record)
                on_chunk = functools.partial(self._store_chunk, record)
                if done:
                    log.info("share: resuming", batch_id=record.id, labelled_before=len(done))
            plan, outcome = await self.scheduler.handle(
                job, mode=mode, pinned=pinned, on_plan=decided, done=done, on_chunk=on_chunk
            )
        except StoicError as exc:
            return Failed(plan, f"{type(exc).__name__}: {exc}", stored)
        except Exception as exc:
            log.exception("batch crashed", batch_id=record.id)
            return Failed(plan, f"{type(exc).__name__}: {exc}", stored)
        return Done(plan, outcome, stored)

    def _store_decision(self, record: BatchRecord, plan: Plan) -> None:
        self.store.record_decision(
            record.id, plan.chosen, plan.reason, dict(plan.estimates), at=self.clock.now()
        )

    async def _store_chunk(
        self, record: BatchRecord, chunk: Chunk, runtime: str, results: Sequence[Any]
    ) -> None:
        """One object per finished chunk (written atomically), so that after a crash
        only the images without one are labelled again. A store that refuses it (a full
        disk) costs only that: the results are in the session, and the batch goes on."""
        try:
            await asyncio.to_thread(
                chunks.store_chunk, self.objects, record, chunk, runtime, results
            )
        except Exception as exc:
            if not transient(exc):
                raise
            self.metrics.store_write_failures.labels("chunk").inc()
            log.warning(
                "share: chunk not stored; a restart would label it again",
                batch_id=record.id,
                chunk=str(chunk),
                error=f"{type(exc).__name__}: {exc}",
            )

    # Recording how it ended -------------------------------------------------------------

    async def _record(self, record: BatchRecord, ran: Done | Failed) -> None:
        """Store what the run came to, retrying each write until it lands. A batch the
        store no longer has running (finished or re-queued elsewhere) is left as is."""
        try:
            if ran.plan is not None and not ran.decision_stored:
                plan = ran.plan
                await self._write(
                    "decision", record, functools.partial(self._store_decision, record, plan)
                )
            match ran:
                case Done():
                    await self._succeed(record, ran.plan, ran.outcome)
                case Failed():
                    await self._fail(record, ran.plan, ran.error)
        except (BatchStateError, BatchNotFound) as exc:
            log.error(
                "batch finished elsewhere; result not recorded", batch_id=record.id, error=str(exc)
            )

    async def _succeed(self, record: BatchRecord, plan: Plan, outcome: Outcome) -> None:
        key = results_key(record.id)
        data = json.dumps(results_document(record, plan, outcome)).encode()
        await self._write("results", record, functools.partial(self.objects.put_bytes, key, data))
        then = f"{plan.reason}; then: {outcome.reason}" if outcome.reason else None
        await self._write(
            "finish",
            record,
            functools.partial(
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
            ),
        )
        if isinstance(plan, SharePlan):  # the results document holds them all now
            await asyncio.to_thread(chunks.remove, self.objects, record)
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

    async def _fail(self, record: BatchRecord, plan: Plan | None, error: str) -> None:
        await self._write(
            "finish",
            record,
            functools.partial(
                self.store.finish_batch,
                record.id,
                state=BatchState.FAILED,
                finished_at=self.clock.now(),
                error=error,
            ),
        )
        await asyncio.to_thread(chunks.remove, self.objects, record)  # nothing reads them now
        self.metrics.batches_finished.labels("failed", plan.chosen if plan else "none").inc()
        log.warning("batch finished", batch_id=record.id, state="failed", error=error)

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


def results_document(record: BatchRecord, plan: Plan, outcome: Outcome) -> dict[str, Any]:
    """The batch's ``results.json``. In share mode, ``shares`` counts the images of
    ``results`` per runtime that labelled them, earlier runs' included (a resumed batch
    labelled only the rest this time), so it always adds up to the results."""
    results = outcome.results if outcome.results is not None else []
    document: dict[str, Any] = {
        "batch_id": record.id,
        "runtime": outcome.winner or outcome.runtime,
        "mode": str(plan.mode),
        "n_images": record.n_images,
        "results": results,
    }
    if outcome.shares:
        document["shares"] = dict(
            Counter(
                str(r.get("runtime") or "earlier") if isinstance(r, dict) else "earlier"
                for r in results
            )
        )
        document["duplicate_images"] = outcome.duplicate_images
    return document
