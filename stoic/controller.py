"""The edge controller: the one place that assembles the daemon (the composition root).

Nothing is created at import time. :meth:`Controller.start` builds, in order:

1. the database (``migrate`` to head first, then :class:`~stoic.store.Store`), and
   re-queues batches a crash left ``running`` (a batch is never lost; one that was
   running during ``controller.max_attempts`` crashes is failed instead, so a poison
   batch cannot crash the daemon forever);
2. the object store, the runtime backends (``local`` by default; ``kubernetes`` per
   runtime; ``simulated`` belongs to the replay and is refused with a ConfigError);
3. the predictor, fed with the recent samples of the store (so a restart keeps what
   was learnt), the availability registry (persisted to the store on every change),
   the recorder (every measurement goes to the predictor, the metrics and the store),
   the requester, the scheduler and the inquisitor;
4. the background tasks, each a named task under a supervisor that logs a crash and
   restarts it with exponential back-off: the **dispatcher** (claims queued batches,
   at most ``controller.max_concurrent_batches`` at once, each a task kept in
   ``running: dict[batch_id, Task]``) and the **inquisitor**.

Before the dispatcher takes its first batch, the demo model is trained (in a child
process, ``stoic model init``) if no model is stored yet, so ``stoic serve`` works on
a fresh machine. When a batch of an application version arrives for which a runtime
has no processing samples yet, the scheduler's bootstrap runs first (paper §3.7) with
two representative jobs cut from that batch's package: its first image, and its first
ten images (fewer if the batch is smaller).

Stopping (:meth:`Controller.stop`; uvicorn calls it from the lifespan after its own
SIGTERM/SIGINT handler set its exit flag) drains: no new batch is claimed, running
ones get ``controller.drain_grace_s`` to finish, then they are cancelled — a
cancelled batch stays ``running`` in the database and is re-queued at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from stoic.api.metrics import Metrics
from stoic.availability import Availability, AvailabilityChange
from stoic.backends.base import RuntimeBackend
from stoic.clock import Clock, WallClock
from stoic.errors import BatchStateError, ConfigError, StoicError
from stoic.ingest import IngestLimits, Ingestor
from stoic.logging import get_logger
from stoic.model import (
    BatchState,
    DeploymentSample,
    Job,
    Mode,
    Outcome,
    Plan,
    ProcessingSample,
    TransferSample,
)
from stoic.objectstore import ObjectStore, make_object_store
from stoic.package import PackageWriter, iter_package, model_key, results_key
from stoic.policy import PolicyOptions
from stoic.settings import Settings
from stoic.store.store import BatchRecord, Store

log = get_logger("stoic.controller")

BOOTSTRAP_SIZES = (1, 10)
"""Images in the two representative bootstrap jobs (paper §3.7: "two representative
tasks"): the fixed cost of a call, and a point ten images further up the line."""


class DaemonRecorder:
    """The daemon's :class:`~stoic.requester.Recorder`: predictor, metrics, then store.

    In-memory consumers first, so a database hiccup (logged by the requester's
    ``MultiRecorder``) cannot stop the predictor from learning the measurement.
    """

    def __init__(self, store: Store, predictor: Any, metrics: Metrics) -> None:
        self.store, self.predictor, self.metrics = store, predictor, metrics

    async def deployment(self, sample: DeploymentSample) -> None:
        self.predictor.observe_deployment(sample)
        self.metrics.observe_deployment(sample)
        await asyncio.to_thread(self.store.add_deployment_sample, sample)

    async def processing(self, sample: ProcessingSample) -> None:
        self.predictor.observe_processing(sample)
        self.metrics.observe_processing(sample)
        await asyncio.to_thread(self.store.add_processing_sample, sample)

    async def transfer(self, sample: TransferSample) -> None:
        self.predictor.observe_transfer(sample)
        self.metrics.observe_transfer(sample)
        await asyncio.to_thread(self.store.add_transfer_sample, sample)


def build_backends(settings: Settings, objects: ObjectStore) -> dict[str, RuntimeBackend]:
    """One backend per backend kind the runtimes name (key: the kind)."""
    kinds = {r.backend for r in settings.runtimes}
    backends: dict[str, RuntimeBackend] = {}
    if "local" in kinds:
        from stoic.backends.local import LocalBackend

        backends["local"] = LocalBackend.from_settings(settings)
    if "kubernetes" in kinds:
        try:
            from stoic.backends.kubernetes import KubernetesBackend
        except ImportError as exc:
            raise ConfigError(
                f"runtimes: backend 'kubernetes' is not available here ({exc})"
            ) from None
        backends["kubernetes"] = KubernetesBackend.from_settings(
            settings.kubernetes, cloud_store=cast(Any, objects), edge_store=objects
        )
    if "simulated" in kinds:
        names = [r.name for r in settings.runtimes if r.backend == "simulated"]
        raise ConfigError(
            f"runtimes {names}: backend 'simulated' is for the replay (stoic replay), "
            "not the daemon; use 'local' or 'kubernetes'"
        )
    return backends


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    factory: Callable[[], Awaitable[None]]


class Controller:
    """Builds and runs the daemon. ``backends`` (keyed by backend kind or runtime
    name) and ``clock`` may be injected (tests); everything else comes from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        backends: Mapping[str, RuntimeBackend] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.metrics = metrics or Metrics()
        self._injected_backends = dict(backends) if backends is not None else None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.state = "created"  # created → starting → running → draining → stopped
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._side: set[asyncio.Task[Any]] = set()
        self._prepared: asyncio.Event | None = None
        self.model_status = "unknown"
        self.runtime_names = [r.name for r in settings.runtimes]
        edges = [r.name for r in settings.runtimes if r.kind.value == "edge"]
        self.edge = edges[0] if edges else None
        # Built by start():
        self.store: Store
        self.objects: ObjectStore
        self.ingestor: Ingestor
        self.backends: dict[str, RuntimeBackend] = {}
        self.predictor: Any = None
        self.availability: Availability
        self.requester: Any = None
        self.scheduler: Any = None
        self.inquisitor: Any = None

    # Life cycle ----------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    @property
    def draining(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        """Signal-safe: only sets the flag and wakes the dispatcher."""
        self._stop_requested = True
        self.notify()

    def mark_draining(self) -> None:
        """Only set the flag (safe in a signal handler): readiness turns false and the
        API refuses new batches; :meth:`stop` does the rest."""
        self._stop_requested = True

    def notify(self) -> None:
        """A batch was queued: wake the dispatcher now rather than at its next poll."""
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Build everything and start the background tasks; returns at once after."""
        from stoic.predict.predictor import Predictor
        from stoic.requester import Requester
        from stoic.scheduler import Scheduler
        from stoic.store import migrate

        s = self.settings
        self.state = "starting"
        self._wake = asyncio.Event()
        self._prepared = asyncio.Event()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(migrate, s.database_url)
        self.store = Store(s.database_url)
        now = self.clock.now()
        runtimes = s.runtime_list()
        await asyncio.to_thread(self.store.upsert_runtimes, runtimes, at=now)
        requeued = await asyncio.to_thread(
            self.store.requeue_running, now, max_attempts=s.controller.max_attempts
        )
        if requeued:
            log.warning("re-queued batches left running by a previous run", batches=requeued)

        self.objects = make_object_store(s)
        if s.objectstore.kind == "s3":
            await asyncio.to_thread(self.objects.ensure_bucket)  # type: ignore[attr-defined]
        self.ingestor = Ingestor(
            store=self.store,
            objects=self.objects,
            tmp_dir=self.tmp_dir,
            limits=IngestLimits.from_settings(s.api),
            runtimes=self.runtime_names,
            default_mode=s.requester.default_mode,
            app=s.controller.app,
            app_version=s.controller.app_version,
            clock=self.clock,
            on_accepted=self._accepted,
            on_rejected=lambda exc: self.metrics.ingest_rejected.labels(exc.code).inc(),
        )
        cleaned = await asyncio.to_thread(self.ingestor.clean_tmp)
        if cleaned:
            log.info("removed temporary ingest files of a previous run", files=cleaned)

        if self._injected_backends is not None:
            self.backends = dict(self._injected_backends)
        else:
            self.backends = build_backends(s, self.objects)
        for backend in self.backends.values():
            starter = getattr(backend, "start", None)
            if starter is not None:
                await starter()

        self.predictor = Predictor(s)
        await self._replay_samples()
        self.availability = Availability(runtimes)
        for row in await asyncio.to_thread(self.store.runtimes):
            if not row.available and row.name in self.runtime_names:
                self.availability.mark_unavailable(
                    row.name, row.unavailable_since or now, "unavailable before the restart"
                )
        self.availability.add_listener(self._persist_availability)
        for name in self.runtime_names:
            self.metrics.runtime_available.labels(name).set(
                1.0 if self.availability.is_available(name) else 0.0
            )
        recorder = DaemonRecorder(self.store, self.predictor, self.metrics)
        by_name = {r.name: r for r in runtimes}
        self.requester = Requester(
            self.backends,
            by_name,
            self.predictor,
            recorder,
            self.clock,
            s,
            availability=self.availability,
        )
        options = PolicyOptions(
            edge_runtime=self.edge or "edge",
            duplicator_runtime=s.requester.duplicator_runtime,
        )
        self.scheduler = Scheduler(self.predictor, self.requester, self.availability, s, options)
        for name in self.runtime_names:
            count = await asyncio.to_thread(
                self.store.count_processing_samples,
                s.controller.app,
                s.controller.app_version,
                name,
            )
            self.scheduler.observed.seed(s.controller.app, s.controller.app_version, name, count)
        self.metrics.watch_states(self._state_counts)
        await asyncio.to_thread(self._warm_predictor)

        specs = [TaskSpec("dispatcher", self._dispatch_loop)]
        if s.controller.inquisitor and any(r.kind.value != "edge" for r in runtimes):
            from stoic.inquisitor import Inquisitor

            self.inquisitor = Inquisitor(
                self.backends, by_name, recorder, self.availability, self.clock, s
            )
            specs.append(TaskSpec("inquisitor", self.inquisitor.run))
        for spec in specs:
            self._tasks[spec.name] = asyncio.create_task(
                self._supervise(spec), name=f"stoic:{spec.name}"
            )
        self.state = "running"
        log.info(
            "controller started",
            runtimes=self.runtime_names,
            database=self.store.engine.url.render_as_string(hide_password=True),
            objects=repr(self.objects),
            max_concurrent_batches=s.controller.max_concurrent_batches,
        )

    async def stop(self) -> None:
        """Drain, then stop everything. Idempotent."""
        if self.state in ("stopped", "created"):
            self.state = "stopped"
            return
        self.request_stop()
        self.state = "draining"
        grace = self.settings.controller.drain_grace_s
        log.info("draining", running=list(self.running), grace_s=grace)
        inquisitor = self._tasks.pop("inquisitor", None)
        if inquisitor is not None:
            await _cancel(inquisitor)
        dispatcher = self._tasks.pop("dispatcher", None)
        if self.running:
            _, late = await asyncio.wait(list(self.running.values()), timeout=grace)
            if late:
                log.warning(
                    "drain grace over; cancelling batches (re-queued at the next start)",
                    batches=[t.get_name() for t in late],
                )
                for t in late:
                    t.cancel()
                await asyncio.wait(late)
        if dispatcher is not None:
            await _cancel(dispatcher)
        for t in list(self._tasks.values()):
            await _cancel(t)
        self._tasks.clear()
        if self._side:
            await asyncio.gather(*self._side, return_exceptions=True)
        for backend in self.backends.values():
            closer = getattr(backend, "close", None) or getattr(backend, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.exception("closing a backend failed")
        self.store.close()
        self.state = "stopped"
        log.info("controller stopped")

    async def _supervise(self, spec: TaskSpec) -> None:
        """Run ``spec`` until it returns or the controller stops; restart it after a
        crash with exponential back-off (reset after it has run for a minute)."""
        loop = asyncio.get_running_loop()
        c = self.settings.controller
        delay = c.task_restart_initial_s
        while not self._stop_requested:
            started = loop.time()
            try:
                await spec.factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if loop.time() - started > 60:
                    delay = c.task_restart_initial_s
                log.exception("background task crashed; restarting", task=spec.name, delay_s=delay)
                self.metrics.task_restarts.labels(spec.name).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, c.task_restart_max_s)

    # Start-up helpers --------------------------------------------------------------

    async def _replay_samples(self) -> None:
        """Feed the predictor the recent history of the store (oldest first)."""
        s, store = self.settings, self.store
        p = s.predictor
        deployments = max(p.max_window, p.calibration_history)
        n = 0
        for name in self.runtime_names:
            for d in await asyncio.to_thread(store.deployment_samples, name, deployments):
                n += self.predictor.observe_deployment(d)
            for ps in await asyncio.to_thread(
                store.processing_samples,
                s.controller.app,
                s.controller.app_version,
                name,
                p.processing_history,
            ):
                n += self.predictor.observe_processing(ps)
        for t in await asyncio.to_thread(store.transfer_samples, p.bandwidth_history):
            n += self.predictor.observe_transfer(t)
        if n:
            log.info("predictor primed from the store", samples=n)

    def _warm_predictor(self) -> None:
        """Pay the predictor's lazy imports and first fits (RANSAC, calibration) now, on
        a throw-away predictor, so no batch's decision time includes them."""
        from stoic.predict.predictor import Predictor

        scratch = Predictor(self.settings)
        name = self.runtime_names[0]
        for i in range(1, 2 * self.settings.predictor.processing_history + 2):
            scratch.observe_processing(
                ProcessingSample("warm-up", "0", name, i, i * 1000, 1.0 + 0.5 * i, float(i))
            )
            scratch.observe_deployment(DeploymentSample(name, float(i), 1.0 + (i % 3)))
        scratch.estimate_all(10, 10_000, app="warm-up", app_version="0")
        self.predictor.estimate_all(
            1,
            212_000,
            app=self.settings.controller.app,
            app_version=self.settings.controller.app_version,
        )

    def _persist_availability(self, change: AvailabilityChange) -> None:
        self.metrics.runtime_available.labels(change.runtime).set(1.0 if change.available else 0.0)
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(
                self.store.set_availability, change.runtime, change.available, change.at
            ),
            name=f"availability:{change.runtime}",
        )
        self._side.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[Any]) -> None:
        self._side.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background write failed", task=task.get_name(), error=str(task.exception()))

    def _accepted(self, batch: BatchRecord) -> None:
        self.metrics.batches_accepted.inc()
        self.metrics.ingest_images.inc(batch.n_images)
        self.metrics.ingest_bytes.inc(batch.n_bytes)
        self.notify()

    def _state_counts(self) -> dict[str, int]:
        return {state.value: self.store.count_batches(state) for state in BatchState}

    async def _prepare(self) -> None:
        """Make sure a model exists before the first batch runs (demo model if none)."""
        s = self.settings
        key = model_key(s.controller.app, s.controller.app_version)
        if await asyncio.to_thread(self.objects.exists, key):
            self.model_status = "present"
            return
        if not s.controller.demo_model:
            self.model_status = "missing"
            log.warning("no model in the object store; batches will fail", model=key)
            return
        self.model_status = "building"
        log.info("no model stored; training the demo model (stoic model init)", model=key)
        await build_demo_model(s)
        self.model_status = "present"
        log.info("demo model trained and stored", model=key)

    # The dispatcher ------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None and self._prepared is not None
        if not self._prepared.is_set():
            await self._prepare()
            self._prepared.set()
        limit = self.settings.controller.max_concurrent_batches
        while not self._stop_requested:
            self._wake.clear()
            while len(self.running) < limit and not self._stop_requested:
                record = await asyncio.to_thread(self.store.claim_next_queued, self.clock.now())
                if record is None:
                    break
                task = asyncio.create_task(self._run_batch(record), name=f"batch:{record.id}")
                self.running[record.id] = task
                self.metrics.batches_running.set(len(self.running))
                task.add_done_callback(functools.partial(self._batch_done, record.id))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.controller.poll_s):
                    await self._wake.wait()

    def _batch_done(self, batch_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(batch_id, None)
        self.metrics.batches_running.set(len(self.running))
        self.notify()

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
        plan: Plan | None = None
        try:
            if s.controller.bootstrap and self.scheduler.needs_bootstrap(job.app, job.app_version):
                await self._bootstrap(record)
            plan = self.scheduler.plan(job, mode=mode, pinned=pinned)
            decision_s = self.scheduler.last_decision_s
            self.metrics.scheduling_overhead.observe(decision_s)
            self.metrics.decisions.labels(str(plan.mode), plan.runtime).inc()
            await asyncio.to_thread(
                self.store.record_decision,
                record.id,
                plan.runtime,
                plan.reason,
                dict(plan.estimates),
                at=self.clock.now(),
            )
            outcome: Outcome = await self.requester.run(job, plan)
            outcome.decision_s = decision_s
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

    async def _succeed(self, record: BatchRecord, plan: Plan, outcome: Outcome) -> None:
        key = results_key(record.id)
        document = {
            "batch_id": record.id,
            "runtime": outcome.winner or outcome.runtime,
            "mode": str(plan.mode),
            "n_images": record.n_images,
            "results": outcome.results if outcome.results is not None else [],
        }
        data = json.dumps(document).encode()
        await asyncio.to_thread(self.objects.put_bytes, key, data)
        if outcome.reason:
            with contextlib.suppress(BatchStateError):
                await asyncio.to_thread(
                    self.store.record_decision,
                    record.id,
                    plan.runtime,
                    f"{plan.reason}; then: {outcome.reason}",
                    dict(plan.estimates),
                )
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
            planned_runtime=plan.runtime,
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
        self.metrics.batches_finished.labels("failed", plan.runtime if plan else "none").inc()
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
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            key = f"batches/{record.id}/bootstrap-{size}/package.tar"
            fd, tmp = tempfile.mkstemp(prefix="ingest-bootstrap-", suffix=".tar", dir=self.tmp_dir)
            try:
                with (
                    os.fdopen(fd, "wb") as out,
                    PackageWriter(out) as writer,
                    self.objects.open_read(record.package_key) as src,
                ):
                    for i, (name, data) in enumerate(iter_package(src)):
                        if i >= size:
                            break
                        writer.add_bytes(name, data)
                n_bytes = Path(tmp).stat().st_size
                with open(tmp, "rb") as f:
                    self.objects.put_stream(key, f)
            finally:
                Path(tmp).unlink(missing_ok=True)
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

    # Queries for the API --------------------------------------------------------------

    def estimate(self, n_images: int, n_bytes: int) -> tuple[dict[str, Any], Plan]:
        """Estimates of every available runtime and the selector's choice."""
        s = self.settings
        job = Job("estimate", n_images, n_bytes, s.controller.app, s.controller.app_version)
        from stoic.policy import decide

        names = self.availability.available_in_order()
        estimates = self.predictor.estimate_all(
            n_images, n_bytes, app=job.app, app_version=job.app_version, runtimes=names
        )
        plan = decide(Mode.SELECTOR, job, estimates, options=self.scheduler.policy_options)
        return estimates, plan


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def build_demo_model(settings: Settings) -> None:
    """Train and store the demo model in a child process (``stoic model init``).

    A child keeps TensorFlow out of the daemon's memory and lets a crash of the
    training stay a logged error. It is pointed at the daemon's object store with the
    same ``STOIC_*`` variables the local backend gives function processes.
    """
    from stoic.backends.local import objectstore_env

    env = {
        **os.environ,
        **objectstore_env(settings.data_dir, settings.objectstore, settings.objects_path),
    }
    env["STOIC_CONTROLLER__APP"] = settings.controller.app
    env["STOIC_CONTROLLER__APP_VERSION"] = settings.controller.app_version
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "model-init.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stoic.cli",
            "model",
            "init",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            rc = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ConfigError(f"training the demo model failed (exit {rc}); log {log_path}:\n{tail}")
