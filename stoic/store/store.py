"""The persistent store: runtimes, measured samples and batches, behind one small API.

Why it looks like this:

* **Synchronous SQLAlchemy.** Every method is one short transaction; the daemon calls
  them through ``asyncio.to_thread``. An async driver would add a second code path for
  SQLite and nothing the daemon needs.
* **Injected time.** Every instant is an argument (float epoch seconds from
  ``stoic.clock``); the store never reads a clock, so the replay's virtual time and the
  daemon's wall time land in the same columns.
* **Plain values out.** Methods return frozen dataclasses (``BatchRecord``,
  ``RuntimeRow``, the sample classes of ``stoic.values``), never ORM objects, so no caller
  can touch a detached session or lazy-load from another thread.
* **The state machine lives here.** queued → running → done | failed, plus running →
  queued for crash recovery, and the operator's moves: queued | running → cancelled
  (:meth:`Store.cancel_batch`; a cancelled batch is never re-queued by recovery) and
  failed | cancelled → queued (:meth:`Store.retry_batch`). Each transition reads the
  row under a lock and raises :class:`~stoic.errors.BatchStateError` when the current
  state does not allow it, so a batch can never be claimed or finished twice, whoever
  asks.
* **Two claimers, one batch each.** On PostgreSQL ``claim_next_queued`` selects with
  ``FOR UPDATE SKIP LOCKED`` (a second claimer skips the locked row instead of waiting)
  and then updates with ``WHERE state = 'queued'``. On SQLite every writing transaction
  starts with ``BEGIN IMMEDIATE`` (writers queue on the database lock up to the busy
  timeout, rather than failing when a read lock cannot be upgraded) and the same
  conditional update backs it up.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from stoic.errors import (
    BatchNotFound,
    BatchStateError,
    ConfigError,
    MissingExtra,
    RuntimeNotFound,
    StoreError,
)
from stoic.store.tables import (
    BatchTable,
    CloudUsageTable,
    DefaultVersionTable,
    DeploymentSampleTable,
    ProcessingSampleTable,
    RuntimeTable,
    TransferSampleTable,
)
from stoic.values import (
    BatchState,
    DeploymentSample,
    DeployOutcome,
    Estimate,
    Job,
    Mode,
    ProcessingSample,
    Runtime,
    RuntimeKind,
    TransferSample,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_IMMEDIATE = "stoic_sqlite_immediate"
"""Execution option: on SQLite, open the transaction with BEGIN IMMEDIATE (a writer)."""

DEFAULT_BUSY_TIMEOUT_S = 30.0

_FINISHED = (BatchState.DONE.value, BatchState.FAILED.value, BatchState.CANCELLED.value)
"""States nothing runs in again unless an operator retries the batch: retention's."""

_IN_CHUNK = 500
"""Ids per ``IN (...)`` list: well below SQLite's bound parameters per statement."""

R = TypeVar("R", bound="DataclassInstance")


# Values handed out ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeRow:
    """A runtime as stored, with its availability as last seen by the inquisitor and
    whether an operator took it out of service (``out_of_service_since`` not None)."""

    name: str
    kind: RuntimeKind
    gpus: int
    backend: str
    available: bool
    unavailable_since: float | None
    updated_at: float | None
    out_of_service_since: float | None = None
    out_of_service_reason: str | None = None
    out_of_service_by: str | None = None

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.name, self.kind, self.gpus, self.backend)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch as stored. Measured fields stay ``None`` until ``finish_batch``.

    ``is_new`` is about the call that returned the record, not the batch: ``True`` only
    from a ``create_batch`` that inserted it, ``False`` when an existing batch with the
    same idempotency key was returned instead (the API answers 200 rather than 202).
    """

    id: str
    created_at: float
    updated_at: float
    idempotency_key: str | None
    n_images: int
    n_bytes: int
    app: str
    app_version: str
    mode: Mode
    pinned_runtime: str | None
    package_key: str
    state: BatchState
    attempts: int
    chosen_runtime: str | None
    decision_reason: str | None
    estimates: dict[str, dict[str, float]]
    transfer_s: float | None
    deployment_s: float | None
    processing_s: float | None
    total_s: float | None
    winner: str | None
    cloud_used_s: float | None
    cloud_wasted_s: float | None
    results_key: str | None
    error: str | None
    skipped: tuple[dict[str, Any], ...]
    started_at: float | None
    finished_at: float | None
    is_new: bool = False
    request_digest: str | None = None

    def job(self) -> Job:
        """What the scheduler needs to decide (sizes, not content)."""
        return Job(
            self.id, self.n_images, self.n_bytes, self.app, self.app_version, self.package_key
        )


@dataclass(frozen=True, slots=True)
class DefaultVersion:
    """The application version new batches of ``app`` get, and since when."""

    app: str
    version: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A finished batch reduced to what the operator page plots: when it finished,
    where the result came from, and the T_s predicted for that runtime at decision
    time against the T_s measured (the paper's Figure 3)."""

    batch_id: str
    finished_at: float
    runtime: str
    predicted_s: float | None
    actual_s: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Finished batches of one (planned runtime, result runtime, state) since an instant,
    with the cloud seconds they held and wasted."""

    chosen_runtime: str | None
    winner: str | None
    state: BatchState
    batches: int
    cloud_used_s: float
    cloud_wasted_s: float


@dataclass(frozen=True, slots=True)
class CloudUsage:
    """Cloud seconds one runtime held on one day for a cause outside batches
    (``bootstrap`` or ``probe``)."""

    runtime: str
    cause: str
    seconds: float


def _batch(row: BatchTable, is_new: bool = False) -> BatchRecord:
    return record_of(
        BatchRecord,
        row,
        mode=Mode(row.mode),
        state=BatchState(row.state),
        estimates={k: dict(v) for k, v in (row.estimates or {}).items()},
        skipped=tuple(dict(s) for s in (row.skipped or [])),
        is_new=is_new,
    )


def _requeue(row: BatchTable, now: float) -> None:
    """Back to the queue, to be decided afresh (``attempts`` is the caller's)."""
    row.state = BatchState.QUEUED.value
    row.started_at = None
    row.updated_at = now
    row.chosen_runtime = None
    row.decision_reason = None
    row.estimates = None


def _runtime(row: RuntimeTable) -> RuntimeRow:
    return record_of(RuntimeRow, row, kind=RuntimeKind(row.kind))


def record_of(cls: type[R], row: object, **converted: Any) -> R:
    """A frozen record of ``cls`` from a table row (or any object): each field is the
    row's column (attribute) of the same name, as stored, but those ``converted``
    (enums, copies of JSON values, fields the row has no column for)."""
    names = (f.name for f in dataclasses.fields(cls))
    stored = {name: getattr(row, name) for name in names if name not in converted}
    return cls(**stored, **converted)


# Engine --------------------------------------------------------------------------------


def make_engine(url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """An engine for ``url`` with stoic's connection settings.

    SQLite: WAL (readers do not block the writer), foreign keys on, a busy timeout, and
    transactions begun by stoic rather than by the ``sqlite3`` module, so that writers
    can ask for ``BEGIN IMMEDIATE``. The parent directory of a database file is created.
    ``sqlite://`` (in memory) uses one shared connection: for single-threaded use only.

    PostgreSQL (``postgresql+psycopg://user:pw@host:port/db``): a pool with pre-ping,
    default READ COMMITTED isolation.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            if parsed.get_backend_name() == "postgresql" and exc.name == "psycopg":
                raise MissingExtra("postgres", f"database.url {parsed.drivername}://") from None
            raise ConfigError(
                f"database.url {parsed.drivername}://: its driver is not installed "
                f"(no module {exc.name!r}); stoic ships postgresql+psycopg: "
                "pip install 'stoic[postgres]'"
            ) from None

    memory = parsed.database in (None, "", ":memory:")
    if memory:
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, instead of pysqlite's implicit one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# The store -----------------------------------------------------------------------------


class Store:
    """Runtimes, samples and batches in one SQL database (SQLite or PostgreSQL).

    Create it with a SQLAlchemy URL after :func:`stoic.store.migrate` has brought the
    schema to head. Thread-safe: each method opens its own session from a pool. Every
    database failure other than the typed ones below surfaces as
    :class:`~stoic.errors.StoreError` naming the database (password hidden).
    """

    def __init__(self, url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.engine = make_engine(url, busy_timeout_s=busy_timeout_s)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False
        )
        self._postgres = self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        maker = self._writer if write else self._reader
        try:
            with maker.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database {_safe_url(self.engine)}: {exc}") from exc

    # Runtimes ----------------------------------------------------------------------

    def upsert_runtimes(
        self, runtimes: Sequence[Runtime], *, at: float | None = None, prune: bool = False
    ) -> None:
        """Insert or update the configured runtimes; availability of known ones is kept.

        New runtimes start available. With ``prune``, rows of runtimes not in the list
        (removed from the settings) are deleted; their samples stay.
        """
        names = [r.name for r in runtimes]
        with self._session(write=True) as s:
            existing = {row.name: row for row in s.scalars(select(RuntimeTable))}
            for r in runtimes:
                row = existing.get(r.name)
                if row is None:
                    s.add(
                        RuntimeTable(
                            name=r.name,
                            kind=r.kind.value,
                            gpus=r.gpus,
                            backend=r.backend,
                            available=True,
                            unavailable_since=None,
                            updated_at=at,
                        )
                    )
                elif (row.kind, row.gpus, row.backend) != (r.kind.value, r.gpus, r.backend):
                    row.kind, row.gpus, row.backend = r.kind.value, r.gpus, r.backend
                    if at is not None:
                        row.updated_at = at
            if prune:
                s.execute(delete(RuntimeTable).where(RuntimeTable.name.not_in(names)))

    def set_availability(self, name: str, available: bool, at: float) -> RuntimeRow:
        """Mark a runtime (un)available. ``unavailable_since`` keeps the instant it first
        went unavailable, so repeated failing probes do not move it."""
        with self._session(write=True) as s:
            row = s.get(RuntimeTable, name, with_for_update=True)
            if row is None:
                raise RuntimeNotFound(name)
            if available:
                row.unavailable_since = None
            elif row.available or row.unavailable_since is None:
                row.unavailable_since = at
            row.available = available
            row.updated_at = at
            return _runtime(row)

    def set_out_of_service(
        self, name: str, out: bool, at: float, *, reason: str = "", by: str = ""
    ) -> RuntimeRow:
        """Take a runtime out of service (``out``) or put it back, as an operator asked;
        ``at``, ``reason`` and ``by`` are kept while it is out (cleared when it is back).
        Taking out one already out keeps the first instant."""
        with self._session(write=True) as s:
            row = s.get(RuntimeTable, name, with_for_update=True)
            if row is None:
                raise RuntimeNotFound(name)
            if not out:
                row.out_of_service_since = None
                row.out_of_service_reason = row.out_of_service_by = None
            else:
                if row.out_of_service_since is None:
                    row.out_of_service_since = at
                row.out_of_service_reason, row.out_of_service_by = reason, by
            row.updated_at = at
            return _runtime(row)

    def runtimes(self) -> list[RuntimeRow]:
        """Every stored runtime, by name."""
        with self._session(write=False) as s:
            return [
                _runtime(r) for r in s.scalars(select(RuntimeTable).order_by(RuntimeTable.name))
            ]

    # Samples -----------------------------------------------------------------------

    def add_deployment_sample(self, sample: DeploymentSample) -> None:
        self.add_samples([sample])

    def add_processing_sample(self, sample: ProcessingSample) -> None:
        self.add_samples([sample])

    def add_transfer_sample(self, sample: TransferSample) -> None:
        self.add_samples([sample])

    def add_samples(
        self, samples: Iterable[DeploymentSample | ProcessingSample | TransferSample]
    ) -> int:
        """Insert many samples of any kind in one transaction (bootstrap, replay)."""
        rows: list[DeploymentSampleTable | ProcessingSampleTable | TransferSampleTable] = []
        for x in samples:
            if isinstance(x, DeploymentSample):
                rows.append(
                    DeploymentSampleTable(
                        runtime=x.runtime,
                        started_at=x.at,
                        duration_s=x.duration_s,
                        outcome=DeployOutcome(x.outcome).value,
                    )
                )
            elif isinstance(x, ProcessingSample):
                rows.append(ProcessingSampleTable(**dataclasses.asdict(x)))
            else:
                rows.append(TransferSampleTable(**dataclasses.asdict(x)))
        if rows:
            with self._session(write=True) as s:
                s.add_all(rows)
        return len(rows)

    def deployment_samples(self, runtime: str, limit: int | None = None) -> list[DeploymentSample]:
        """The most recent ``limit`` (all if None) deployment samples, oldest first."""
        t = DeploymentSampleTable
        q = select(t).where(t.runtime == runtime)
        q = q.order_by(t.started_at.desc(), t.id.desc()).limit(limit)
        with self._session(write=False) as s:
            rows = list(s.scalars(q))
        return [
            DeploymentSample(r.runtime, r.started_at, r.duration_s, DeployOutcome(r.outcome))
            for r in reversed(rows)
        ]

    def processing_samples(
        self, app: str, app_version: str, runtime: str, limit: int | None = None
    ) -> list[ProcessingSample]:
        """The most recent ``limit`` processing samples of one app on one runtime, oldest
        first."""
        t = ProcessingSampleTable
        q = select(t).where(t.app == app, t.app_version == app_version, t.runtime == runtime)
        q = q.order_by(t.at.desc(), t.id.desc()).limit(limit)
        with self._session(write=False) as s:
            rows = list(s.scalars(q))
        return [
            ProcessingSample(
                r.app, r.app_version, r.runtime, r.images, r.n_bytes, r.duration_s, r.at
            )
            for r in reversed(rows)
        ]

    def transfer_samples(
        self, limit: int | None = None, runtime: str | None = None
    ) -> list[TransferSample]:
        """The most recent ``limit`` uploads (of one runtime if given), oldest first."""
        t = TransferSampleTable
        q = select(t)
        if runtime is not None:
            q = q.where(t.runtime == runtime)
        q = q.order_by(t.at.desc(), t.id.desc()).limit(limit)
        with self._session(write=False) as s:
            rows = list(s.scalars(q))
        return [TransferSample(r.n_bytes, r.seconds, r.at, r.runtime) for r in reversed(rows)]

    def samples_between(
        self, since: float | None = None, until: float | None = None
    ) -> tuple[list[DeploymentSample], list[ProcessingSample], list[TransferSample]]:
        """Every sample of every runtime taken in ``[since, until)`` (either bound
        optional), oldest first: what ``stoic env fit --store`` fits a spec to."""
        out: list[Any] = []
        with self._session(write=False) as s:
            for t, at in (
                (DeploymentSampleTable, DeploymentSampleTable.started_at),
                (ProcessingSampleTable, ProcessingSampleTable.at),
                (TransferSampleTable, TransferSampleTable.at),
            ):
                q = select(t)
                if since is not None:
                    q = q.where(at >= since)
                if until is not None:
                    q = q.where(at < until)
                out.append(list(s.scalars(q.order_by(at, t.id))))
        deps, procs, trans = out
        return (
            [
                DeploymentSample(r.runtime, r.started_at, r.duration_s, DeployOutcome(r.outcome))
                for r in deps
            ],
            [
                ProcessingSample(
                    r.app, r.app_version, r.runtime, r.images, r.n_bytes, r.duration_s, r.at
                )
                for r in procs
            ],
            [TransferSample(r.n_bytes, r.seconds, r.at, r.runtime) for r in trans],
        )

    def count_deployment_samples(self, runtime: str | None = None) -> int:
        t = DeploymentSampleTable
        q = select(func.count()).select_from(t)
        if runtime is not None:
            q = q.where(t.runtime == runtime)
        return self._count(q)

    def count_processing_samples(
        self, app: str | None = None, app_version: str | None = None, runtime: str | None = None
    ) -> int:
        t = ProcessingSampleTable
        q = select(func.count()).select_from(t)
        for col, value in ((t.app, app), (t.app_version, app_version), (t.runtime, runtime)):
            if value is not None:
                q = q.where(col == value)
        return self._count(q)

    def count_transfer_samples(self) -> int:
        return self._count(select(func.count()).select_from(TransferSampleTable))

    def _count(self, q: Any) -> int:
        with self._session(write=False) as s:
            return int(s.scalar(q) or 0)

    # Default application versions -------------------------------------------------

    def default_version(self, app: str) -> DefaultVersion | None:
        """The version set for ``app`` (None: none was set; the settings decide)."""
        with self._session(write=False) as s:
            row = s.get(DefaultVersionTable, app)
            return DefaultVersion(row.app, row.version, row.updated_at) if row else None

    def set_default_version(self, app: str, version: str, at: float) -> DefaultVersion:
        """Make ``version`` the one new batches of ``app`` get (insert or update)."""
        with self._session(write=True) as s:
            row = s.get(DefaultVersionTable, app, with_for_update=True)
            if row is None:
                s.add(DefaultVersionTable(app=app, version=version, updated_at=at))
            else:
                row.version, row.updated_at = version, at
            return DefaultVersion(app, version, at)

    # Batches -----------------------------------------------------------------------

    def create_batch(
        self,
        *,
        created_at: float,
        n_images: int,
        n_bytes: int,
        package_key: str,
        app: str = "classify",
        app_version: str = "1",
        mode: Mode = Mode.SELECTOR,
        pinned_runtime: str | None = None,
        idempotency_key: str | None = None,
        skipped: Sequence[Mapping[str, Any]] = (),
        batch_id: str | None = None,
        request_digest: str | None = None,
    ) -> BatchRecord:
        """Insert a queued batch, or return the batch already created with
        ``idempotency_key`` (``is_new=False``; the other arguments are then ignored:
        the caller compares ``request_digest`` to decide whether that is a conflict).

        Concurrent calls with one key insert once: the unique constraint decides and the
        loser reads the winner's row.
        """
        if idempotency_key is not None:
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing
        row = BatchTable(
            id=batch_id or str(uuid.uuid4()),
            created_at=created_at,
            updated_at=created_at,
            idempotency_key=idempotency_key,
            n_images=n_images,
            n_bytes=n_bytes,
            app=app,
            app_version=app_version,
            mode=Mode(mode).value,
            pinned_runtime=pinned_runtime,
            package_key=package_key,
            state=BatchState.QUEUED.value,
            attempts=0,
            estimates=None,
            skipped=[dict(x) for x in skipped],
            request_digest=request_digest,
        )
        try:
            with self._session(write=True) as s:
                s.add(row)
        except StoreError as exc:
            if idempotency_key is not None and isinstance(exc.__cause__, IntegrityError):
                existing = self.find_by_idempotency_key(idempotency_key)
                if existing is not None:
                    return existing
            raise
        return _batch(row, is_new=True)

    def find_by_idempotency_key(self, key: str) -> BatchRecord | None:
        """The batch created with this idempotency key, if any."""
        with self._session(write=False) as s:
            row = s.scalars(select(BatchTable).where(BatchTable.idempotency_key == key)).first()
            return None if row is None else _batch(row)

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch, or :class:`~stoic.errors.BatchNotFound`."""
        with self._session(write=False) as s:
            row = s.get(BatchTable, batch_id)
            if row is None:
                raise BatchNotFound(batch_id)
            return _batch(row)

    def list_batches(self, state: BatchState | None = None, limit: int = 100) -> list[BatchRecord]:
        """The newest ``limit`` batches (in ``state`` if given), newest first."""
        t = BatchTable
        q = select(t)
        if state is not None:
            q = q.where(t.state == BatchState(state).value)
        q = q.order_by(t.created_at.desc(), t.id.desc()).limit(limit)
        with self._session(write=False) as s:
            return [_batch(r) for r in s.scalars(q)]

    def count_batches(self, state: BatchState | None = None) -> int:
        q = select(func.count()).select_from(BatchTable)
        if state is not None:
            q = q.where(BatchTable.state == BatchState(state).value)
        return self._count(q)

    def batch_counts(self) -> dict[BatchState, int]:
        """Batches per state (every state present, zero if none), in one query."""
        t = BatchTable
        q = select(t.state, func.count()).group_by(t.state)
        counts = dict.fromkeys(BatchState, 0)
        with self._session(write=False) as s:
            for state, n in s.execute(q):
                counts[BatchState(state)] = int(n)
        return counts

    def recent_outcomes(self, limit: int = 200) -> list[BatchOutcome]:
        """The newest ``limit`` done batches (by creation), oldest first, with the T_s
        predicted for the runtime that produced the result. Reads the
        ``(state, created_at)`` index and only the columns it needs."""
        t = BatchTable
        q = (
            select(t.id, t.finished_at, t.winner, t.chosen_runtime, t.estimates, t.total_s)
            .where(t.state == BatchState.DONE.value)
            .order_by(t.created_at.desc(), t.id.desc())
            .limit(limit)
        )
        with self._session(write=False) as s:
            rows = list(s.execute(q))
        out: list[BatchOutcome] = []
        for batch_id, finished_at, winner, chosen, estimates, total_s in reversed(rows):
            runtime = winner or chosen
            if runtime is None or finished_at is None or total_s is None:
                continue
            predicted = (estimates or {}).get(runtime, {}).get("total_s")
            out.append(
                BatchOutcome(
                    batch_id,
                    float(finished_at),
                    runtime,
                    None if predicted is None else float(predicted),
                    float(total_s),
                )
            )
        return out

    def usage_since(self, since: float) -> list[UsageRow]:
        """Finished batches created at or after ``since``, grouped by planned runtime,
        result runtime and state, with their summed cloud seconds used and wasted
        (one aggregate over the ``created_at`` index)."""
        t = BatchTable
        q = (
            select(
                t.chosen_runtime,
                t.winner,
                t.state,
                func.count(),
                func.coalesce(func.sum(t.cloud_used_s), 0.0),
                func.coalesce(func.sum(t.cloud_wasted_s), 0.0),
            )
            .where(
                t.created_at >= since,
                t.state.in_([BatchState.DONE.value, BatchState.FAILED.value]),
            )
            .group_by(t.chosen_runtime, t.winner, t.state)
        )
        with self._session(write=False) as s:
            return [
                UsageRow(
                    chosen, winner, BatchState(state), int(n), float(used or 0), float(wasted or 0)
                )
                for chosen, winner, state, n, used, wasted in s.execute(q)
            ]

    def add_cloud_usage(self, day: float, runtime: str, cause: str, seconds: float) -> None:
        """Add ``seconds`` to what ``runtime`` held for ``cause`` (``bootstrap``,
        ``probe``, ``warm``) on the day that began at ``day`` (a local midnight)."""
        for attempt in (1, 2):
            try:
                with self._session(write=True) as s:
                    key = (day, runtime, cause)
                    row = s.get(CloudUsageTable, key, with_for_update=True)
                    if row is None:
                        s.add(
                            CloudUsageTable(day=day, runtime=runtime, cause=cause, seconds=seconds)
                        )
                    else:
                        row.seconds += seconds
                return
            except StoreError as exc:
                # Two first writes of one key raced: the second adds to the first's row.
                if attempt == 2 or not isinstance(exc.__cause__, IntegrityError):
                    raise

    def cloud_usage_on(self, day: float) -> list[CloudUsage]:
        """The day's cloud seconds outside batches, per runtime and cause."""
        t = CloudUsageTable
        q = select(t.runtime, t.cause, t.seconds).where(t.day == day).order_by(t.runtime, t.cause)
        with self._session(write=False) as s:
            return [CloudUsage(r, c, float(sec)) for r, c, sec in s.execute(q)]

    def claim_next_queued(self, now: float) -> BatchRecord | None:
        """Atomically move the oldest queued batch to running and return it.

        ``attempts`` grows by one and ``started_at`` becomes ``now``. Returns None when
        nothing is queued. Two claimers (threads or processes) never get the same batch.
        """
        t = BatchTable
        while True:
            with self._session(write=True) as s:
                pick = (
                    select(t.id)
                    .where(t.state == BatchState.QUEUED.value)
                    .order_by(t.created_at, t.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                batch_id = s.scalars(pick).first()
                if batch_id is None:
                    return None
                claimed = s.connection().execute(
                    update(t)
                    .where(t.id == batch_id, t.state == BatchState.QUEUED.value)
                    .values(
                        state=BatchState.RUNNING.value,
                        attempts=t.attempts + 1,
                        started_at=now,
                        updated_at=now,
                    )
                )
                if claimed.rowcount == 1:
                    row = s.get(t, batch_id, populate_existing=True)
                    assert row is not None
                    return _batch(row)
            # Another claimer won this row between our SELECT and UPDATE (possible only
            # without row locks); the queue shrank, so try the next one.

    def release_claim(self, batch_id: str, now: float) -> BatchRecord:
        """Hand a claimed batch back to the queue, its attempt not counted: a claim that
        raced with a stop, or a batch a drain cancelled (not the batch's fault). Running
        → queued, its decision cleared (it is decided afresh)."""
        with self._session(write=True) as s:
            row = self._locked(s, batch_id, "release its claim", (BatchState.RUNNING,))
            _requeue(row, now)
            row.attempts = max(0, row.attempts - 1)
            return _batch(row)

    def _locked(
        self, s: Session, batch_id: str, wanted: str, allowed: tuple[BatchState, ...]
    ) -> BatchTable:
        row = s.get(BatchTable, batch_id, with_for_update=True)
        if row is None:
            raise BatchNotFound(batch_id)
        if row.state not in allowed:
            raise BatchStateError(batch_id, row.state, wanted, tuple(a.value for a in allowed))
        return row

    def record_decision(
        self,
        batch_id: str,
        chosen_runtime: str,
        reason: str,
        estimates: Mapping[str, Estimate | Mapping[str, float]],
        *,
        at: float | None = None,
    ) -> BatchRecord:
        """Store the policy's choice for a running batch (again on re-prediction).

        ``estimates`` maps runtime names to :class:`Estimate` or its ``as_dict()``.
        """
        as_dicts = {
            name: (e.as_dict() if isinstance(e, Estimate) else {k: float(v) for k, v in e.items()})
            for name, e in estimates.items()
        }
        with self._session(write=True) as s:
            row = self._locked(s, batch_id, "record a decision", (BatchState.RUNNING,))
            row.chosen_runtime = chosen_runtime
            row.decision_reason = reason
            row.estimates = as_dicts
            if at is not None:
                row.updated_at = at
            return _batch(row)

    def finish_batch(
        self,
        batch_id: str,
        *,
        state: BatchState,
        finished_at: float,
        transfer_s: float | None = None,
        deployment_s: float | None = None,
        processing_s: float | None = None,
        total_s: float | None = None,
        winner: str | None = None,
        cloud_used_s: float | None = None,
        cloud_wasted_s: float | None = None,
        results_key: str | None = None,
        error: str | None = None,
        decision_reason: str | None = None,
    ) -> BatchRecord:
        """Move a running batch to ``done`` or ``failed`` with its measured outcome
        (``decision_reason``: the decision's reason with what happened after it, when
        something did; None keeps the reason recorded with the decision).

        Raises :class:`~stoic.errors.BatchStateError` unless the batch is running, so a
        batch finishes once: a second finish, or one after crash recovery requeued it,
        is refused.
        """
        state = BatchState(state)
        if state not in (BatchState.DONE, BatchState.FAILED):
            raise ValueError(f"finish_batch: state must be 'done' or 'failed', not {state!r}")
        with self._session(write=True) as s:
            row = self._locked(s, batch_id, f"finish as {state.value!r}", (BatchState.RUNNING,))
            row.state = state.value
            row.finished_at = finished_at
            row.updated_at = finished_at
            row.transfer_s = transfer_s
            row.deployment_s = deployment_s
            row.processing_s = processing_s
            row.total_s = total_s
            row.winner = winner
            row.cloud_used_s = cloud_used_s
            row.cloud_wasted_s = cloud_wasted_s
            row.results_key = results_key
            row.error = error
            if decision_reason is not None:
                row.decision_reason = decision_reason
            return _batch(row)

    def running_batches(self) -> list[BatchRecord]:
        """Every running batch, oldest first (crash recovery looks at each before
        :meth:`requeue_running`)."""
        t = BatchTable
        q = select(t).where(t.state == BatchState.RUNNING.value).order_by(t.created_at, t.id)
        with self._session(write=False) as s:
            return [_batch(r) for r in s.scalars(q)]

    def requeue_running(
        self,
        now: float,
        *,
        max_attempts: int | None = None,
        progressed: Collection[str] = (),
    ) -> list[str]:
        """Crash recovery at start-up: running batches go back to queued.

        A batch that was running when the daemon stopped has no owner any more; its
        decision is cleared (it will be decided afresh). The ids in ``progressed`` made
        progress in the run that was cut short (share mode stored new chunks): that run
        is not counted as an attempt. With ``max_attempts``, any other batch whose
        counted attempts reached it is marked failed instead, so one batch that crashes
        the daemon cannot do so forever. Returns the ids requeued, oldest first.
        """
        t = BatchTable
        requeued: list[str] = []
        with self._session(write=True) as s:
            rows = s.scalars(
                select(t)
                .where(t.state == BatchState.RUNNING.value)
                .order_by(t.created_at, t.id)
                .with_for_update()
            )
            for row in rows:
                row.updated_at = now
                if row.id in progressed:
                    row.attempts = max(0, row.attempts - 1)
                elif max_attempts is not None and row.attempts >= max_attempts:
                    row.state = BatchState.FAILED.value
                    row.finished_at = now
                    row.error = (
                        f"gave up after {row.attempts} attempt(s): the daemon stopped "
                        "while the batch was running, each time without progress"
                    )
                    continue
                _requeue(row, now)
                requeued.append(row.id)
        return requeued

    def cancel_batch(
        self,
        batch_id: str,
        at: float,
        note: str,
        *,
        allowed: tuple[BatchState, ...] = (BatchState.QUEUED, BatchState.RUNNING),
    ) -> BatchRecord:
        """An operator's cancel: a batch in one of the ``allowed`` states ends
        ``cancelled`` at ``at``, ``note`` (who cancelled it) as its error. Crash
        recovery never re-queues it; only :meth:`retry_batch` does."""
        with self._session(write=True) as s:
            row = self._locked(s, batch_id, "cancel", allowed)
            row.state = BatchState.CANCELLED.value
            row.finished_at = row.updated_at = at
            row.error = note
            return _batch(row)

    def retry_batch(self, batch_id: str, at: float) -> BatchRecord:
        """An operator's retry: a failed or cancelled batch goes back to the queue as if
        it had just been accepted (attempts, decision, measured times, error and results
        cleared); its package must still be stored (the caller checks)."""
        with self._session(write=True) as s:
            row = self._locked(s, batch_id, "retry", (BatchState.FAILED, BatchState.CANCELLED))
            _requeue(row, at)
            row.attempts = 0
            row.finished_at = row.error = row.results_key = row.winner = None
            row.transfer_s = row.deployment_s = row.processing_s = row.total_s = None
            row.cloud_used_s = row.cloud_wasted_s = None
            return _batch(row)

    def delete_batch(self, batch_id: str) -> None:
        """Remove a batch (rollback of a failed ingest, retention). A running batch has
        an owner and is refused with :class:`~stoic.errors.BatchStateError`."""
        with self._session(write=True) as s:
            row = self._locked(
                s,
                batch_id,
                "delete",
                (BatchState.QUEUED, BatchState.DONE, BatchState.FAILED, BatchState.CANCELLED),
            )
            s.delete(row)

    # Retention (stoic.daemon.retention) ---------------------------------------------

    def finished_created_before(self, batch_ids: Collection[str], before: float) -> list[str]:
        """Those of ``batch_ids`` that are finished (done, failed or cancelled) and were created
        before ``before``: whose package the retention sweep may delete. A queued or
        running batch is never among them."""
        t, ids = BatchTable, list(batch_ids)
        out: list[str] = []
        with self._session(write=False) as s:
            for start in range(0, len(ids), _IN_CHUNK):
                q = select(t.id).where(
                    t.id.in_(ids[start : start + _IN_CHUNK]),
                    t.state.in_(_FINISHED),
                    t.created_at < before,
                )
                out.extend(s.scalars(q))
        return sorted(out)

    def finished_before(self, before: float) -> list[str]:
        """Finished batches that finished before ``before`` (their last update, when a
        failure recorded no finish), oldest first: those the retention sweep deletes."""
        t = BatchTable
        ended = func.coalesce(t.finished_at, t.updated_at)
        q = select(t.id).where(t.state.in_(_FINISHED), ended < before).order_by(ended, t.id)
        with self._session(write=False) as s:
            return list(s.scalars(q))

    def delete_finished_before(self, batch_id: str, before: float) -> bool:
        """Delete the batch if it is still finished and finished before ``before``, in
        one transaction (a batch retried meanwhile is kept); whether it was deleted."""
        t = BatchTable
        ended = func.coalesce(t.finished_at, t.updated_at)
        q = delete(t).where(t.id == batch_id, t.state.in_(_FINISHED), ended < before)
        with self._session(write=True) as s:
            return s.connection().execute(q).rowcount == 1
