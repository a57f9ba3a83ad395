"""The edge controller: the one place that assembles the daemon (the composition root).

Nothing is created at import time. :meth:`Controller.start` first runs
:meth:`Controller.claim` (``stoic serve`` runs it before the server starts, so that a
refusal is one line and exit code 2), whose steps may refuse to start and keep nothing
when they do:

0. :func:`check_extras` and :func:`check_daemon`: the optional extras the settings
   need are installed, and there is an edge runtime (else one line naming it);
1. the data directory's lock (:class:`~stoic.daemon.lock.DataDirLock`: a second daemon
   on the same ``data_dir`` fails here, before it touches anything);
2. ``_open_object_store``: the object store (a directory must be writable; a bucket is
   made if missing); ``_open_database``: ``migrate`` to head, then
   :class:`~stoic.store.Store` with ``database.busy_timeout_s``;
3. ``_take_lease``: the database's lease and the object store's marker
   (:class:`~stoic.daemon.lease.DaemonLease`: a second daemon on the same database or
   object store, from another data directory, fails here, before it touches a batch).

Then the build steps, in order (each a method of its own, so the order reads as a list):

4. ``_recover``: registers the runtimes; the default application version
   (:meth:`Controller.set_default_version`, else ``controller.app_version``);
5. ``_open_objects``: the ingestor (with the :class:`~stoic.storage.disk.DiskWatch`
   that refuses uploads when a disk is full); ``_recover_batches``: re-queues the
   batches a crash left ``running`` (a batch is never lost; a run cut short counts as
   an attempt only when it made no progress, and a batch with
   ``controller.max_attempts`` such runs is failed instead, so a poison batch cannot
   crash the daemon forever); ``_start_backends``: the runtime backends (``local`` by
   default; ``kubernetes`` per runtime; ``simulated`` belongs to the replay and is
   refused with a ConfigError), each ``start()``-ed;
6. ``_build_scheduling``: the predictor, fed with the recent samples of the store (so a
   restart keeps what was learnt), the availability registry (persisted to the store
   on every change; the runtimes an operator took out of service stay out), the
   recorder (every measurement goes to the predictor, the metrics and the store), the
   requester, the scheduler and the inquisitor;
7. ``_start_tasks``: the background tasks, each a named task under a supervisor that
   logs a crash and restarts it with exponential back-off: the **dispatcher**
   (:class:`~stoic.daemon.dispatcher.Dispatcher`: claims queued batches, at most
   ``controller.max_concurrent_batches`` at once, each a task kept in
   ``running: dict[batch_id, Task]``, and runs each end to end), the **retention**
   sweep and disk usage measurements (:mod:`~stoic.daemon.retention`), the
   **inquisitor** and the **lease** heartbeat.

Before the dispatcher takes its first batch, the demo model is trained (in a child
process, ``stoic model init``: :mod:`stoic.daemon.demo_classifier`) if no model is
stored yet, so ``stoic serve`` works on a fresh machine. When a batch of an application version
arrives for which a runtime has no processing samples yet, the dispatcher runs the
scheduler's bootstrap first (paper §3.7) with two representative jobs cut from that
batch's package: its first image, and its first ten images (fewer if the batch is
smaller). What the store knows of a version (its processing samples, its bootstrap
counts) is loaded the first time the daemon meets it (:meth:`Controller.prime_version`),
so only a version never seen is bootstrapped.

Stopping drains: no new batch is claimed, running ones get ``controller.drain_grace_s``
to finish, then they are cancelled — a cancelled batch is handed back to the queue, its
attempt not counted (a drain is not the batch's fault), and runs at the next start.
``stoic serve`` runs :meth:`Controller.drain` while the listener is still open (the API
answers 503 to new batches, ``/readyz`` 503, the rest as usual), then closes it;
:meth:`Controller.stop` (from the lifespan) drains whatever is left and stops
everything, releasing the lease, then the lock, last.
The life cycle is one :class:`ControllerState` (created → starting → running → draining →
stopped), changed only by ``Controller._move`` along :data:`MOVES`. Backends take part
through :class:`~stoic.backends.base.RuntimeBackend`'s own ``start()`` / ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from stoic.aio import BackgroundTasks, cancel_quietly, supervise
from stoic.backends.base import RuntimeBackend
from stoic.clock import Clock, WallClock, local_midnight
from stoic.daemon import chunks
from stoic.daemon import progress as batch_progress
from stoic.daemon.actions import restore_out_of_service
from stoic.daemon.demo_classifier import build_demo_model
from stoic.daemon.dispatcher import Dispatcher
from stoic.daemon.lease import DaemonLease, describe
from stoic.daemon.lock import DataDirLock
from stoic.daemon.metrics import CloudCause, Metrics
from stoic.daemon.probes import BatchProbeWork
from stoic.daemon.recorder import DaemonRecorder
from stoic.daemon.retention import Retention
from stoic.daemon.uplink import HttpUplinkCheck
from stoic.errors import ConfigError, InputError, InvalidField, ModelNotFound
from stoic.extras import installed, require
from stoic.ingest.ingestor import Ingestor
from stoic.ingest.options import IngestLimits
from stoic.logging import get_logger
from stoic.predict.medians import numba_kernel
from stoic.schedule.assembly import (
    build_core,
    inquisitor_options,
    wants_inquisitor,
    warm_predictor,
)
from stoic.schedule.probe.availability import Availability, AvailabilityChange
from stoic.settings import Settings
from stoic.storage import disk as disk_names
from stoic.storage.disk import DiskWatch, free_bytes
from stoic.storage.objectstore import (
    DirObjectStore,
    ObjectStore,
    S3ObjectStore,
    make_object_store,
    objects_name,
)
from stoic.storage.package import model_key
from stoic.store.lease import Lease
from stoic.store.store import BatchRecord, DefaultVersion, Store
from stoic.values import (
    BatchState,
    Estimate,
    Job,
    Mode,
    Plan,
    Runtime,
    RuntimeKind,
)

if TYPE_CHECKING:
    from stoic.predict.predictor import Predictor
    from stoic.schedule.assembly import Core
    from stoic.schedule.execute.requester import Requester
    from stoic.schedule.probe.inquisitor import Inquisitor
    from stoic.schedule.scheduler import Scheduler

log = get_logger("stoic.controller")

DISPATCHER_EXIT_S = 10.0
"""How long a drain waits for the dispatcher to notice the stop flag (it may be inside
one claim, a short database transaction) before cancelling it."""


class ControllerState(StrEnum):
    """The controller's life cycle, the one record of it: created → starting → running →
    draining → stopped (:data:`MOVES`; :meth:`Controller._move` is the only writer)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"  # asked to stop: no batch is claimed or accepted, not ready
    STOPPED = "stopped"

    @property
    def stopping(self) -> bool:
        """No new batch may start: the dispatcher and the supervised tasks return."""
        return self in (ControllerState.DRAINING, ControllerState.STOPPED)


MOVES: Mapping[ControllerState, frozenset[ControllerState]] = {
    ControllerState.CREATED: frozenset(
        {ControllerState.STARTING, ControllerState.DRAINING, ControllerState.STOPPED}
    ),
    # A start that fails stays STARTING until stop(); a stop asked for before or while
    # starting (a signal) leaves it DRAINING once started: it claims nothing.
    ControllerState.STARTING: frozenset(
        {ControllerState.RUNNING, ControllerState.DRAINING, ControllerState.STOPPED}
    ),
    ControllerState.RUNNING: frozenset({ControllerState.DRAINING, ControllerState.STOPPED}),
    ControllerState.DRAINING: frozenset({ControllerState.STOPPED}),
    ControllerState.STOPPED: frozenset(),
}
"""The moves the life cycle allows; any other is ignored (a second stop, a late signal)."""


def check_extras(settings: Settings, *, backends: bool = True) -> None:
    """Raise :class:`~stoic.errors.MissingExtra` (one line) if the settings need an
    extra that is not installed; ``stoic serve`` calls it before the server starts.

    ``backends=False`` skips the runtime backends (tests inject their own).
    """
    s = settings
    if backends:
        local = [r.name for r in s.runtimes if r.backend == "local"]
        if local and s.local.command is None:  # the real function server, run here
            require("function", f"runtimes {local} (backend 'local' runs the function here)")
        cloud = [r.name for r in s.runtimes if r.backend == "kubernetes"]
        if cloud:
            require("kubernetes", f"runtimes {cloud} (backend 'kubernetes')")
            require("s3", f"runtimes {cloud} (their pods read the S3 store kubernetes.store)")
    if s.objectstore.kind == "s3":
        require("s3", "objectstore.kind = 's3'")
    if s.database.url is not None and s.database.url.startswith("postgresql+psycopg"):
        require("postgres", "database.url postgresql+psycopg://")
    if s.predictor.deployment_method == "autoreg":
        require("analysis", "predictor.deployment_method = 'autoreg'", "statsmodels")


def check_daemon(settings: Settings) -> None:
    """Raise :class:`~stoic.errors.ConfigError` (one line) for settings the replay takes
    but the daemon cannot run on; ``stoic serve`` calls it before the server starts.

    A daemon needs an edge runtime: the demo model, the bootstrap, a share batch's
    edge leg and every fallback (``requester.fallback_to_edge``) run there; and no
    runtime on the replay's ``simulated`` backend.
    """
    if not any(r.kind is RuntimeKind.EDGE for r in settings.runtimes):
        names = [r.name for r in settings.runtimes]
        raise ConfigError(
            f"runtimes: the daemon needs a runtime of kind 'edge' (configured: {names}); "
            'add [[runtimes]] name = "edge", kind = "edge"'
        )
    simulated = [r.name for r in settings.runtimes if r.backend == "simulated"]
    if simulated:
        raise ConfigError(
            f"runtimes {simulated}: backend 'simulated' is for the replay (stoic replay), "
            "not the daemon; use 'local' or 'kubernetes'"
        )


def build_backends(settings: Settings, objects: ObjectStore) -> dict[str, RuntimeBackend]:
    """One backend per backend kind the runtimes name (key: the kind)."""
    kinds = {r.backend for r in settings.runtimes}
    backends: dict[str, RuntimeBackend] = {}
    check_extras(settings)
    check_daemon(settings)
    if "local" in kinds:
        from stoic.backends.local import LocalBackend

        backends["local"] = LocalBackend.from_settings(settings)
    if "kubernetes" in kinds:
        from stoic.backends.kubernetes import KubernetesBackend

        backends["kubernetes"] = KubernetesBackend.from_settings(
            settings.kubernetes, edge_store=objects
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
        lock: DataDirLock | None = None,
        objects: ObjectStore | None = None,
        disk_usage: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.settings = settings
        self.lock = lock or DataDirLock(settings.data_dir)
        self._injected_objects = objects
        disks = {disk_names.DATA: settings.data_dir}
        if settings.objectstore.kind == "dir":
            disks[disk_names.OBJECTS] = settings.objects_path
        sqlite = re.match(r"sqlite(\+pysqlite)?:///(.+)", settings.database_url)
        if sqlite is not None and sqlite.group(2) != ":memory:":
            disks[disk_names.DATABASE] = Path(sqlite.group(2)).parent
        self.disks = DiskWatch(disks, settings.objectstore.min_free_bytes, disk_usage)
        self.lease: DaemonLease | None = None
        self._claimed = False
        self.clock: Clock = clock or WallClock()
        self.metrics = metrics or Metrics()
        self._injected_backends = dict(backends) if backends is not None else None
        self.state = ControllerState.CREATED
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._side = BackgroundTasks("controller")
        self.model_status = "unknown"
        self.model_building_since: float | None = None
        # The version new batches get: controller.app_version until one is set through
        # PUT /v1/models/default (stored, read back at start: _recover).
        self.app = settings.controller.app
        self.app_version = settings.controller.app_version
        self.default_version: DefaultVersion | None = None
        self._primed: set[tuple[str, str]] = set()
        self._version_lock = asyncio.Lock()
        self.started_at: float | None = None  # clock instant start() finished (uptime)
        self.runtime_names = [r.name for r in settings.runtimes]
        edges = [r.name for r in settings.runtimes if r.kind.value == "edge"]
        self.edge = edges[0] if edges else None
        # Built by start():
        self.store: Store
        self.objects: ObjectStore
        self.ingestor: Ingestor
        self.backends: dict[str, RuntimeBackend] = {}
        self.core: Core
        self.predictor: Predictor
        self.availability: Availability
        self.requester: Requester
        self.scheduler: Scheduler
        self.inquisitor: Inquisitor | None = None
        self.probe_work: BatchProbeWork | None = None
        self.dispatcher: Dispatcher | None = None
        self.retention: Retention | None = None

    # Life cycle ----------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    @property
    def running(self) -> dict[str, asyncio.Task[None]]:
        """The batches being processed, by id (the dispatcher's; empty before start)."""
        return self.dispatcher.running if self.dispatcher is not None else {}

    @property
    def draining(self) -> bool:
        return self.state is ControllerState.DRAINING

    def _move(self, to: ControllerState) -> bool:
        """The one place the life cycle changes: to ``to`` if :data:`MOVES` allows it
        from here (returns whether it moved). One assignment, so a signal handler or a
        thread may call it."""
        if to not in MOVES[self.state]:
            return False
        self.state = to
        return True

    def request_stop(self) -> None:
        """Signal-safe: move to draining and wake the dispatcher."""
        self._move(ControllerState.DRAINING)
        self.notify()

    def mark_draining(self) -> None:
        """Only move to draining (safe in a signal handler): readiness turns false and
        the API refuses new batches; :meth:`drain` and :meth:`stop` do the rest."""
        self._move(ControllerState.DRAINING)

    def notify(self) -> None:
        """A batch was queued: wake the dispatcher now rather than at its next poll."""
        if self.dispatcher is not None:
            self.dispatcher.notify()

    def claim(self) -> None:
        """The start-up steps that may refuse to start, synchronously and before any
        batch is touched: the settings the daemon needs, the data directory's lock,
        the object store (writable), the database (migrated, answering) and its lease
        with the object store's marker (:mod:`stoic.daemon.lease`).

        Raises :class:`~stoic.errors.DataDirInUse` or
        :class:`~stoic.errors.LeaseHeld` (another daemon), a
        :class:`~stoic.errors.ConfigError` or :class:`~stoic.errors.StoreError`,
        having kept nothing. ``stoic serve`` calls it before the server says a word,
        so that a refusal is one line; :meth:`start` calls it if nobody has.
        """
        if self._claimed:
            return
        check_extras(self.settings, backends=self._injected_backends is None)
        check_daemon(self.settings)
        self.lock.acquire()
        try:
            self._open_object_store()
            self._open_database()
            self._take_lease()
        except BaseException:
            self._unclaim()
            raise
        self._claimed = True

    def _unclaim(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(Exception):
                self.lease.release()
        store: Store | None = getattr(self, "store", None)
        if store is not None:
            store.close()
        self.lock.release()
        self._claimed = False

    async def start(self) -> None:
        """:meth:`claim`, build everything and start the background tasks; returns at
        once after. A second call (``stoic serve`` starts the controller before the
        app's lifespan does) returns at once."""
        if self.started_at is not None:
            return
        await asyncio.to_thread(self.claim)
        self._move(ControllerState.STARTING)
        try:
            runtimes = self.settings.runtime_list()
            await self._recover(runtimes)
            await self._open_objects()
            await self._recover_batches()
            await self._start_backends()
            # numba's import (0.4 s, the fast extra) off the loop, not in a first
            # calibration on it (stoic/predict/medians.py)
            await asyncio.to_thread(numba_kernel)
            await self._build_scheduling(runtimes)
            self._start_tasks(runtimes)
        except BaseException:
            self._unclaim()
            raise
        self._move(ControllerState.RUNNING)
        self.started_at = self.clock.now()
        log.info(
            "controller started",
            runtimes=self.runtime_names,
            database=self.store.engine.url.render_as_string(hide_password=True),
            objects=repr(self.objects),
            max_concurrent_batches=self.settings.controller.max_concurrent_batches,
        )

    async def drain(self, *, abandon: Callable[[], bool] = lambda: False) -> None:
        """Stop claiming batches and give the running ones ``controller.drain_grace_s``
        to finish, then cancel them (handed back to the queue, to run at the next start). Returns
        early, cancelling, when ``abandon()`` turns true (a second Ctrl-C). Idempotent;
        the daemon keeps answering requests meanwhile."""
        drained = "dispatcher" not in self._tasks  # the first drain takes it
        if drained or self.state not in (ControllerState.RUNNING, ControllerState.DRAINING):
            return
        self.request_stop()
        grace = self.settings.controller.drain_grace_s
        log.info("draining", running=list(self.running), grace_s=grace)
        inquisitor = self._tasks.pop("inquisitor", None)
        if inquisitor is not None:
            await cancel_quietly(inquisitor)
        # The dispatcher sees the flag and returns by itself; a claim it has in flight
        # is handed back to the queue rather than started (see Dispatcher.run).
        dispatcher = self._tasks.pop("dispatcher", None)
        if dispatcher is not None:
            done, _ = await asyncio.wait([dispatcher], timeout=DISPATCHER_EXIT_S)
            if not done:
                await cancel_quietly(dispatcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.running and loop.time() < deadline and not abandon():
            await asyncio.wait(
                list(self.running.values()), timeout=min(0.1, deadline - loop.time())
            )
        late = [t for t in self.running.values() if not t.done()]
        if late:
            log.warning(
                "drain grace over; cancelling batches (handed back to the queue)",
                batches=[t.get_name() for t in late],
            )
            for t in late:
                t.cancel()
            await asyncio.wait(late)

    async def stop(self) -> None:
        """Drain, then stop everything and release the data directory. Idempotent."""
        if self.state is ControllerState.STOPPED or not hasattr(self, "store"):
            self._move(ControllerState.STOPPED)
            self.lock.release()
            return
        await self.drain()
        for t in list(self._tasks.values()):
            await cancel_quietly(t)
        self._tasks.clear()
        core: Core | None = getattr(self, "core", None)
        if core is not None and core.legs.warm_pods is not None:
            await core.legs.warm_pods.aclose()  # their seconds are counted before the wait
        await self._side.wait()
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing a backend failed")
        ingestor: Ingestor | None = getattr(self, "ingestor", None)
        if ingestor is not None:
            ingestor.close()
        if self.lease is not None:
            try:
                await asyncio.to_thread(self.lease.release)
            except Exception as exc:  # it expires by itself
                log.warning("releasing the lease failed", error=str(exc))
        self.store.close()
        self._move(ControllerState.STOPPED)
        self.lock.release()
        log.info("controller stopped")

    async def _supervise(self, spec: TaskSpec) -> None:
        """Run ``spec`` until it returns or the controller stops; restart it after a
        crash with exponential back-off (reset after it has run for a minute)."""
        c = self.settings.controller
        await supervise(
            spec.name,
            spec.factory,
            stopping=lambda: self.state.stopping,
            initial_delay_s=c.task_restart_initial_s,
            max_delay_s=c.task_restart_max_s,
            on_crash=lambda name: self.metrics.task_restarts.labels(name).inc(),
            logger=log,
        )

    # Build steps (start) ---------------------------------------------------------------

    def _open_database(self) -> None:
        """Migrate to head and open the store (``database.busy_timeout_s``)."""
        from stoic.store.migrate import migrate

        s = self.settings
        migrate(s.database_url)
        self.store = Store(s.database_url, busy_timeout_s=s.database.busy_timeout_s)

    async def _recover(self, runtimes: list[Runtime]) -> None:
        """Register the runtimes, read the default application version."""
        now = self.clock.now()
        await asyncio.to_thread(self.store.upsert_runtimes, runtimes, at=now)
        self.default_version = await asyncio.to_thread(self.store.default_version, self.app)
        if self.default_version is not None:
            self.app_version = self.default_version.version
            log.info(
                "default application version from the store",
                app=self.app,
                app_version=self.app_version,
                since=self.default_version.updated_at,
            )

    def _open_object_store(self) -> None:
        """The object store (injected, or from the settings), checked: a directory
        must be writable, a bucket is created if missing."""
        if self._injected_objects is not None:
            self.objects = self._injected_objects
            return
        self.objects = make_object_store(self.settings)
        if isinstance(self.objects, DirObjectStore):
            self.objects.check_writable()
        if isinstance(self.objects, S3ObjectStore):
            self.objects.ensure_bucket()

    def _take_lease(self) -> None:
        """The database's lease and the object store's marker (:mod:`stoic.daemon.lease`),
        before any batch is touched."""
        s = self.settings
        self.lease = DaemonLease(
            self.store,
            self.objects,
            data_dir=s.data_dir,
            database=self.store.engine.url.render_as_string(hide_password=True),
            where=objects_name(s),
            ttl_s=s.database.lease_ttl_s,
            clock=self.clock,
            on_lost=self._lease_lost,
        )
        self.lease.acquire()

    def _lease_lost(self, holder: Lease | None) -> None:
        who = describe(holder, self.clock.now()) if holder is not None else "nobody"
        log.error(
            "another daemon took this daemon's lease on the database over; stopping "
            "(claiming no batch, /readyz 503): stop one of the two",
            holder=who,
        )
        self.request_stop()

    async def _open_objects(self) -> None:
        """The ingestor; temporary files of a previous run go."""
        s = self.settings
        self.ingestor = Ingestor(
            store=self.store,
            objects=self.objects,
            tmp_dir=self.tmp_dir,
            limits=IngestLimits.from_settings(s.api),
            runtimes=self.runtime_names,
            default_mode=s.requester.default_mode,
            app=self.app,
            app_version=self.app_version,
            clock=self.clock,
            on_accepted=self._accepted,
            on_rejected=lambda exc: self.metrics.ingest_rejected.labels(exc.code).inc(),
            workers=s.api.validation_workers,
            disks=self.disks,
        )
        cleaned = await asyncio.to_thread(self.ingestor.clean_tmp)
        if cleaned:
            log.info("removed temporary ingest files of a previous run", files=cleaned)

    async def _recover_batches(self) -> None:
        """Re-queue the batches a previous run left ``running``. A share batch whose
        cut-short run stored chunks made progress: that run is not counted. One that
        gives up (``controller.max_attempts`` runs without progress) takes its chunk
        objects along."""
        store, objects = self.store, self.objects
        left = await asyncio.to_thread(store.running_batches)
        if not left:
            return
        progressed = [r.id for r in left if await asyncio.to_thread(chunks.progressed, objects, r)]
        requeued = await asyncio.to_thread(
            store.requeue_running,
            self.clock.now(),
            max_attempts=self.settings.controller.max_attempts,
            progressed=progressed,
        )
        if requeued:
            log.warning(
                "re-queued batches left running by a previous run",
                batches=requeued,
                progressed=progressed,
            )
        for record in left:
            if record.id not in requeued:
                log.warning("batch given up after its attempts", batch_id=record.id)
                await asyncio.to_thread(chunks.remove, objects, record)

    async def _start_backends(self) -> None:
        if self._injected_backends is not None:
            self.backends = dict(self._injected_backends)
        else:
            self.backends = build_backends(self.settings, self.objects)
        for backend in self.backends.values():
            await backend.start()

    async def _build_scheduling(self, runtimes: list[Runtime]) -> None:
        """The core (:func:`~stoic.schedule.assembly.build_core`): the predictor (primed
        from the store), availability (restored and persisted), the recorder, the
        requester, the scheduler (its bootstrap counts seeded) and the inquisitor."""
        s = self.settings
        now = self.clock.now()
        rows = [
            r for r in await asyncio.to_thread(self.store.runtimes) if r.name in self.runtime_names
        ]
        down = [
            AvailabilityChange(
                row.name, False, row.unavailable_since or now, "unavailable before the restart"
            )
            for row in rows
            if not row.available
        ]
        if wants_inquisitor(s):
            self.probe_work = BatchProbeWork(self.objects, self.tmp_dir)
        p = s.inquisitor
        # A cloud runtime on the local backend is a process on this machine: its start
        # is probed every local.probe_period_s, not every tick (docs/operations.md).
        stand_ins = [r.name for r in runtimes if r.backend == "local" and not r.is_edge]
        probe_options = replace(
            inquisitor_options(s),
            deploy_periods=tuple((name, s.local.probe_period_s) for name in stand_ins),
        )
        core = build_core(
            s,
            self.backends,
            self.clock,
            make_recorder=lambda predictor: DaemonRecorder(self.store, predictor, self.metrics),
            runtimes=runtimes,
            down=down,
            on_availability=self._persist_availability,
            probe_work=self.probe_work,
            uplink_check=(
                HttpUplinkCheck(p.uplink_check_url, p.uplink_check_timeout_s)
                if p.uplink_check_url is not None
                else None
            ),
            probe_options=probe_options,
            on_probe_held=lambda runtime, seconds: self.cloud_held(
                runtime, CloudCause.PROBE, seconds
            ),
            on_warm_held=lambda runtime, seconds: self.cloud_held(
                runtime, CloudCause.WARM, seconds
            ),
            day_start=local_midnight,
        )
        self.core = core
        await self._restore_budget()
        self.predictor, self.availability = core.predictor, core.availability
        self.requester, self.scheduler = core.requester, core.scheduler
        self.inquisitor = core.inquisitor
        await self._replay_samples()
        restore_out_of_service(self.availability, rows)
        away = self.availability.unavailable()
        for name in self.runtime_names:
            self.metrics.runtime_available.labels(name).set(0.0 if name in away else 1.0)
            self.metrics.runtime_in_service.labels(name).set(
                1.0 if self.availability.in_service(name) else 0.0
            )
        await self.prime_version(self.app, self.app_version)
        self.metrics.watch_states(self._state_counts)
        self.metrics.watch_budget(core.budget)
        self.metrics.watch_disks(self.disks.states)
        await asyncio.to_thread(warm_predictor, s, core, self.app, self.app_version)
        if core.uplink is not None:
            self.metrics.watch_uplink(core.uplink)
        if core.inquisitor is not None:
            self.metrics.watch_probes(self._probe_cloud_s)

    async def _restore_budget(self) -> None:
        """Charge the cloud budget with what the store recorded today before a restart:
        the batches' cloud seconds (by planned runtime) and the bootstrap's and probes'.
        The store counts from ready, the budget from the deployment's request, so this
        is a lower bound of what was spent."""
        if self.core.budget.limit is None:
            return
        day = local_midnight(self.clock.now())
        batches = await asyncio.to_thread(self.store.usage_since, day)
        other = await asyncio.to_thread(self.store.cloud_usage_on, day)
        for row in batches:
            self.core.budget.charge(row.chosen_runtime or "", row.cloud_used_s)
        for usage in other:
            self.core.budget.charge(usage.runtime, usage.seconds)

    def _probe_cloud_s(self) -> dict[str, float]:
        return dict(self.inquisitor.cloud_s) if self.inquisitor is not None else {}

    def _start_tasks(self, runtimes: list[Runtime]) -> None:
        """The dispatcher, the retention sweep and (with cloud runtimes) the inquisitor,
        each supervised."""
        self.dispatcher = Dispatcher(
            self.settings,
            clock=self.clock,
            metrics=self.metrics,
            store=self.store,
            objects=self.objects,
            scheduler=self.scheduler,
            tmp_dir=self.tmp_dir,
            stopping=lambda: self.state.stopping,
            prepare=self._prepare,
            prime=self.prime_version,
            claimed=self.probe_work.offer if self.probe_work is not None else None,
            held=self.cloud_held,
        )
        self.retention = Retention(
            self.settings.retention,
            data_dir=self.settings.data_dir,
            store=self.store,
            objects=self.objects,
            clock=self.clock,
            metrics=self.metrics,
        )
        specs = [
            TaskSpec("dispatcher", self.dispatcher.run),
            TaskSpec("retention", self.retention.run),
        ]
        if self.lease is not None:  # renewed until stop(), through a drain
            specs.append(TaskSpec("lease", self.lease.run))
        if self.inquisitor is not None:
            specs.append(TaskSpec("inquisitor", self.inquisitor.run))
        for spec in specs:
            self._tasks[spec.name] = asyncio.create_task(
                self._supervise(spec), name=f"stoic:{spec.name}"
            )

    async def _replay_samples(self) -> None:
        """Feed the predictor the recent history of the store (oldest first): deployment
        and transfer samples here; processing samples per application version in
        :meth:`prime_version`."""
        s, store = self.settings, self.store
        p = s.predictor
        deployments = max(p.max_window, p.calibration_history, p.deployment_tail_history)
        n = 0
        for name in self.runtime_names:
            for d in await asyncio.to_thread(store.deployment_samples, name, deployments):
                n += self.predictor.observe_deployment(d)
        for t in await asyncio.to_thread(store.transfer_samples, p.bandwidth_history):
            n += self.predictor.observe_transfer(t)
        if n:
            log.info("predictor primed from the store", samples=n)

    async def prime_version(self, app: str, app_version: str) -> None:
        """Once per (app, version) and start: feed the predictor that version's recent
        processing samples and seed the scheduler's bootstrap counts from the store.

        A version the store has no samples of is then bootstrapped by its first batch
        (paper §3.7); one it knows (a restart, or a switch back to an older version) is
        not. The dispatcher calls this before every batch (a no-op after the first)."""
        if (app, app_version) in self._primed:
            return
        async with self._version_lock:
            if (app, app_version) in self._primed:
                return
            p = self.settings.predictor
            # The regression's window and, before it, the samples whose out-of-sample
            # ratios give the processing tail (ProcessingModel.excess), or the line's
            # shape history where it is longer: a restart keeps them.
            history = max(
                p.processing_history + p.processing_tail_history, p.processing_shape_history
            )
            n = 0
            for name in self.runtime_names:
                for ps in await asyncio.to_thread(
                    self.store.processing_samples, app, app_version, name, history
                ):
                    n += self.predictor.observe_processing(ps)
                count = await asyncio.to_thread(
                    self.store.count_processing_samples, app, app_version, name
                )
                self.scheduler.observed.seed(app, app_version, name, count)
            self._primed.add((app, app_version))
            if n:
                log.info(
                    "processing samples primed from the store",
                    app=app,
                    app_version=app_version,
                    samples=n,
                )

    def cloud_held(self, runtime: str, cause: CloudCause, seconds: float) -> None:
        """Count cloud seconds held outside a batch's own run (a bootstrap run, a
        probe): in ``stoic_cloud_used_seconds_total`` at once, and in the store's row of
        the day (the operator page's "Today"), written in the background."""
        if seconds <= 0:
            return
        self.metrics.cloud_held(runtime, cause, seconds)
        day = local_midnight(self.clock.now())
        self._side.spawn(
            asyncio.to_thread(self.store.add_cloud_usage, day, runtime, cause.value, seconds),
            name=f"cloud-usage:{runtime}",
        )

    def progress(self) -> batch_progress.Board:
        """What the batches are doing now (:mod:`stoic.daemon.progress`), copied."""
        running = dict(self.dispatcher.progress) if self.dispatcher is not None else {}
        waiting = None
        if self.model_status == "building":
            since = self.model_building_since or self.clock.now()
            waiting = batch_progress.waiting_for_model(since)
        return batch_progress.Board(running, waiting)

    def _persist_availability(self, change: AvailabilityChange) -> None:
        self.metrics.runtime_available.labels(change.runtime).set(1.0 if change.available else 0.0)
        self._side.spawn(
            asyncio.to_thread(
                self.store.set_availability, change.runtime, change.available, change.at
            ),
            name=f"availability:{change.runtime}",
        )

    def _accepted(self, batch: BatchRecord) -> None:
        self.metrics.batches_accepted.inc()
        self.metrics.ingest_images.inc(batch.n_images)
        self.metrics.ingest_bytes.inc(batch.n_bytes)
        self.notify()

    def _state_counts(self) -> dict[str, int]:
        return {state.value: self.store.count_batches(state) for state in BatchState}

    async def _prepare(self) -> None:
        """Make sure a model exists before the first batch runs (demo model if none).
        The dispatcher calls it once, before its first claim."""
        s = self.settings
        version = self.app_version
        key = model_key(self.app, version)
        if await asyncio.to_thread(self.objects.exists, key):
            self.model_status = "present"
            return
        if not s.controller.demo_model:
            self.model_status = "missing"
            log.warning("no model in the object store; batches will fail", model=key)
            return
        if not installed("function"):
            self.model_status = "missing"
            log.warning(
                "no model in the object store, and the demo model needs TensorFlow here "
                "(pip install 'stoic[function]'); push one: stoic model push",
                model=key,
            )
            return
        self.model_status = "building"
        self.model_building_since = self.clock.now()
        log.info("no model stored; training the demo model (stoic model init)", model=key)
        await build_demo_model(s, app_version=version)
        self.model_status = "present"
        log.info("demo model trained and stored", model=key)

    # The default application version ----------------------------------------------

    async def set_default_version(self, app: str, version: str) -> DefaultVersion:
        """Make ``version`` (whose model must be stored) the one new batches get.

        Stored first (it survives a restart and is seen by every controller on the
        database), then used: batches accepted from now on record ``version``; batches
        already queued keep the version they were accepted with. The first batch of a
        version with no processing samples bootstraps it (:meth:`prime_version`).
        """
        if app != self.app:
            raise InvalidField(
                f"app {app!r}: this daemon serves {self.app!r} (controller.app)", field="app"
            )
        try:
            key = model_key(app, version)
        except InputError as exc:
            raise InvalidField(str(exc), field="version") from None
        if not await asyncio.to_thread(self.objects.exists, key):
            raise ModelNotFound(
                key,
                hint=f"push it first: stoic model push FILE.keras --app {app} --version {version}",
            )
        previous = self.app_version
        default = await asyncio.to_thread(
            self.store.set_default_version, app, version, self.clock.now()
        )
        self.default_version = default
        self.app_version = version
        self.ingestor.app_version = version
        self.model_status = "present"
        await self.prime_version(app, version)
        log.info("default application version set", app=app, app_version=version, previous=previous)
        return default

    # Queries for the API --------------------------------------------------------------

    def estimate(self, n_images: int, n_bytes: int) -> tuple[dict[str, Estimate], Plan]:
        """Estimates of every available runtime and the selector's choice, from the
        scheduler (the same estimates a batch of this size would be decided on)."""
        job = Job("estimate", n_images, n_bytes, self.app, self.app_version)
        plan = self.scheduler.preview(job, mode=Mode.SELECTOR)
        return dict(plan.estimates), plan
