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
  (:class:`~stoic.daemon.finish.Done` or :class:`~stoic.daemon.finish.Failed`) stays in
  memory and the :class:`~stoic.daemon.finish.Finisher` records it, retrying each write
  with back-off until it lands: a database locked past its busy timeout or a full disk
  delays the batch, it does not strand it ``running`` with no owner. Meanwhile the
  batch's task lives on, so it counts in ``stoic_batches_running`` (and
  ``stoic_batches_unrecorded``). A failed claim is retried the same way, in the loop;
  a share chunk the store refuses is skipped (it only saves work after a crash). The
  batch tasks are watched: one that ends with an exception anyway is logged, not left
  for asyncio to report as "never retrieved".
* **The model is made sure of first.** The ``prepare`` hook (the controller's: train
  the demo model if none is stored) runs once before the first claim, so batches
  accepted meanwhile wait in the queue instead of failing.
* **An operator can hold the queue and cancel a batch.** :meth:`Dispatcher.drain`
  stops claiming (running batches go on; :meth:`Dispatcher.undrain` resumes), and
  :meth:`Dispatcher.cancel` ends a queued or running batch as ``cancelled``: the store
  first (so nothing re-queues it, whatever happens next), then the batch's task is
  cancelled, which tears down its legs as a drain's cancellation does, and is waited
  for. Both take the claim lock, held from a claim until its batch is registered in
  ``running``, so a batch being claimed is never missed: once either returns, the
  batch is either in ``running`` or not claimed at all. A batch whose result is being
  recorded is past cancelling (409).
* **Bootstrapping (paper §3.7) is cut from the batch itself.** A new application
  version has no processing samples, so before its first batch is planned the
  scheduler's bootstrap runs on sub-packages of that batch (its first image and its
  first ten images), giving the T_p regression two points of its own. Every batch
  carries the version it was accepted with (``PUT /v1/models/default`` changes the
  version of the batches accepted after it), so a switch of version mid-queue is safe.
  With ``controller.bootstrap_scope = "contenders"`` (the default) only the edge and
  the runtimes that could win the batch at hand are bootstrapped (docs/scheduling.md);
  the pod seconds the runs hold count as cloud time used (``held``, cause bootstrap).
* **A batch says what it is doing.** :attr:`Dispatcher.progress` holds a
  :class:`~stoic.daemon.progress.Progress` per batch it works on (bootstrap run n of
  m, where it runs, storing the result), read by the API, the page and ``submit
  --wait``; it goes when the batch's task ends.

The log events keep the logger name ``stoic.daemon.controller``: they are part of the
operating interface (``docs/operations.md``) and of what tests and tooling filter on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stoic.clock import Clock
from stoic.daemon import chunks
from stoic.daemon import progress as progress_of
from stoic.daemon.finish import Done, Failed, Finisher
from stoic.daemon.metrics import CloudCause, Metrics
from stoic.daemon.probes import cut_head
from stoic.daemon.progress import Progress
from stoic.daemon.retry import Backoff, transient
from stoic.errors import ActionRefused, BatchNotFound, BatchStateError, StoicError
from stoic.logging import get_logger
from stoic.schedule.scheduler import BootstrapRun, Scheduler
from stoic.schedule.share.board import Chunk
from stoic.settings import Settings
from stoic.storage.objectstore import ObjectStore
from stoic.store.store import BatchRecord, Store
from stoic.values import Job, Mode, Plan

log = get_logger("stoic.controller")

BOOTSTRAP_SIZES = (1, 10)
"""Images in the two representative bootstrap jobs (paper §3.7: "two representative
tasks"): the fixed cost of a call, and a point ten images further up the line."""


CANCEL_WAIT_S = 30.0
"""How long :meth:`Dispatcher.cancel` waits for a cancelled batch's legs to stop (pods
deleted, processes killed) before it answers; the batch is ``cancelled`` in the store
before the wait, and the tear-down goes on after it."""


@dataclass(frozen=True, slots=True)
class Drain:
    """An operator's hold on the queue: since when, and who asked."""

    since: float
    by: str


class Dispatcher:
    """Claims queued batches (at most ``controller.max_concurrent_batches`` at once)
    and runs each: bootstrap if needed, plan, record the decision, run the plan,
    store the results document, finish the batch, update the metrics.

    ``stopping`` tells whether the controller is draining (no new batch is claimed);
    ``prepare`` runs once before the first claim; ``prime(app, version)`` before each
    batch (the controller's: load what the store knows of that application version,
    so that only a version it has never seen is bootstrapped); ``claimed(record)``
    when a batch is claimed (the controller's: its images may serve the inquisitor's
    processing probes, :mod:`stoic.daemon.probes`); ``held(runtime, cause, seconds)``
    when a bootstrap run held a cloud runtime (the controller's: metrics and store).
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
        held: Callable[[str, CloudCause, float], None] | None = None,
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
        self._held = held
        self.running: dict[str, asyncio.Task[None]] = {}
        self.progress: dict[str, Progress] = {}  # batch id -> what it is doing now
        self.drained: Drain | None = None
        self._claiming = asyncio.Lock()  # a claim, until its batch is in ``running``
        self._finishing: set[str] = set()  # batches whose result is being recorded
        self._cancelled: set[str] = set()  # batches an operator cancelled, still unwinding
        self._wake = asyncio.Event()
        self._prepared = False
        self._backoff = Backoff.from_settings(settings.controller)
        self.finisher = Finisher(
            store=store, objects=objects, metrics=metrics, clock=clock, backoff=self._backoff
        )

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
            while len(self.running) < limit and not self._stopping() and self.drained is None:
                try:
                    async with self._claiming:
                        record = await self._claim()
                        if record is None:
                            break
                        if self._stopping():
                            # The stop flag was set while the claim was in flight.
                            await self._release(record, "claim handed back: the daemon is draining")
                            break
                        self._start(record)
                except StoicError as exc:
                    if not transient(exc):
                        raise
                    delays = delays or self._backoff.delays()
                    delay = next(delays)
                    self.finisher.failed_write("claim", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                delays = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.controller.poll_s):
                    await self._wake.wait()

    def _start(self, record: BatchRecord) -> None:
        task = asyncio.create_task(self._run_batch(record), name=f"batch:{record.id}")
        self.running[record.id] = task
        self.metrics.batches_running.set(len(self.running))
        task.add_done_callback(functools.partial(self._batch_done, record.id))

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
        self.progress.pop(batch_id, None)
        self.metrics.batches_running.set(len(self.running))
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "batch task crashed; the batch stays running until the next start",
                batch_id=batch_id,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        self.notify()

    # Operator actions ----------------------------------------------------------------

    async def drain(self, by: str) -> Drain:
        """Claim no more batches until :meth:`undrain`; those running go on. Returns
        once no claim is in flight (the first drain's instant and author are kept)."""
        async with self._claiming:
            if self.drained is None:
                self.drained = Drain(self.clock.now(), by)
        return self.drained

    def undrain(self) -> None:
        """Claim batches again."""
        self.drained = None
        self.notify()

    async def cancel(self, batch_id: str, note: str) -> BatchRecord:
        """End a queued or running batch as ``cancelled`` (``note``: who asked), then
        cancel its task here, if it has one, and wait (up to :data:`CANCEL_WAIT_S`) for
        its legs to be torn down. A running batch with no task here (its task crashed)
        is only marked. Raises :class:`~stoic.errors.BatchStateError` for a batch in
        another state, :class:`~stoic.errors.ActionRefused` for one whose result is
        being recorded."""
        async with self._claiming:
            task = self.running.get(batch_id)
            if task is not None and batch_id in self._finishing:
                raise ActionRefused(
                    f"batch {batch_id!r} has finished running; its result is being recorded"
                )
            record = await asyncio.to_thread(
                self.store.cancel_batch, batch_id, self.clock.now(), note
            )
            if task is not None:
                self._cancelled.add(batch_id)
                task.cancel()
        if task is None:
            await self.finisher.cancelled(record)
        else:
            await asyncio.wait([task], timeout=CANCEL_WAIT_S)
        return record

    # One batch -----------------------------------------------------------------------

    async def _run_batch(self, record: BatchRecord) -> None:
        """Run the batch, then record how it ended, however long the store takes to
        accept it. Never raises but on cancellation (a drain), which hands the batch
        back to the queue; a result that cannot be recorded at all (not a storage
        failure: those are retried) finishes the batch as ``failed`` with that error."""
        try:
            ran = await self._work(record)
            self.progress[record.id] = progress_of.recording(self.clock.now())
            self._finishing.add(record.id)
            self.metrics.batches_unrecorded.inc()
            try:
                await self.finisher.finish(record, ran)
            except Exception as exc:
                log.exception("recording the batch failed", batch_id=record.id)
                await self.finisher.finish(
                    record, Failed(ran.plan, f"{type(exc).__name__}: {exc}", ran.decision_stored)
                )
            finally:
                self.metrics.batches_unrecorded.dec()
        except asyncio.CancelledError:
            if record.id in self._cancelled:
                await self.finisher.cancelled(record)
            else:
                await self._release(
                    record, "batch cancelled by the drain; handed back to the queue"
                )
            raise
        finally:
            self._finishing.discard(record.id)
            self._cancelled.discard(record.id)

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
            self.progress[record.id] = progress_of.processing(p, self.clock.now())
            self.metrics.scheduling_overhead.observe(p.decision_s)
            self.metrics.decisions.labels(str(p.mode), p.chosen).inc()
            try:
                await asyncio.to_thread(self.finisher.store_decision, record, p)
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
            scope = job if s.controller.bootstrap_scope == "contenders" else None
            if s.controller.bootstrap and self.scheduler.needs_bootstrap(
                job.app, job.app_version, contenders_of=scope
            ):
                await self._bootstrap(record, scope)
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

    # Bootstrapping -------------------------------------------------------------------

    async def _bootstrap(self, record: BatchRecord, contenders_of: Job | None) -> None:
        """Run the scheduler's bootstrap with sub-packages of ``record``'s package
        (only the runtimes that could win ``contenders_of``, when given), telling
        :attr:`progress` of each run and ``held`` of the pod seconds each one held."""

        def on_run(run: BootstrapRun) -> None:
            if run.outcome is None:
                self.progress[record.id] = progress_of.bootstrapping(
                    record.app,
                    record.app_version,
                    run.runtime,
                    run.run,
                    run.runs,
                    run.n_images,
                    self.clock.now(),
                )
            elif self._held is not None:
                self._held(run.runtime, CloudCause.BOOTSTRAP, run.outcome.cloud_used_s)

        jobs, keys = await asyncio.to_thread(self._representative_jobs, record)
        try:
            report = await self.scheduler.bootstrap(
                record.app, record.app_version, jobs, contenders_of=contenders_of, on_run=on_run
            )
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
