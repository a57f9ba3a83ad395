"""The database schema as SQLAlchemy 2 typed models.

These classes are the single source of truth for the schema: the Alembic revisions in
``migrations/versions`` must produce exactly this (a test runs ``compare_metadata``
after ``migrate`` and expects no difference). Change a model, then add a revision.

Conventions, and why:

* Instants are ``DOUBLE PRECISION`` seconds since the Unix epoch, as produced by the
  injected clock (``stoic.clock``). The replay writes virtual instants through the same
  code, so a timezone-aware ``DateTime`` would only add conversions, not meaning.
* Samples carry no foreign key to ``runtimes``: history must outlive a runtime that is
  removed from the settings, and the replay records samples without registering rows.
* Enumerated columns (state, outcome) are strings guarded by CHECK constraints rather
  than native enums, so adding a value is a plain migration on SQLite and PostgreSQL.
* Every constraint and index has a deterministic name (``NAMING``) so that later
  migrations can drop or alter it by name on both backends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME = String(64)
"""Runtime, app and version names (settings restrict runtime names to 31 characters)."""


SAMPLE_ID = BigInteger().with_variant(Integer, "sqlite")
"""Sample keys: 64-bit on PostgreSQL; SQLite only auto-increments an INTEGER rowid."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RuntimeTable(Base):
    """One configured runtime: whether the inquisitor currently finds it usable, and
    whether an operator has taken it out of service."""

    __tablename__ = "runtimes"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str] = mapped_column(String(32))
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    # When it last went from available to unavailable; None while available.
    unavailable_since: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[float | None] = mapped_column(Double)
    # When an operator took it out of service (None: in service), why and who: the
    # scheduler places nothing on it and the inquisitor leaves it alone until an
    # operator puts it back; kept apart from ``available``, which the probes own.
    out_of_service_since: Mapped[float | None] = mapped_column(Double)
    out_of_service_reason: Mapped[str | None] = mapped_column(Text)
    out_of_service_by: Mapped[str | None] = mapped_column(String(255))


class DeploymentSampleTable(Base):
    """One measured deployment (time to ready) of a cloud runtime."""

    __tablename__ = "deployment_samples"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'timeout', 'failure')", name="outcome"),
        # The predictor reads the most recent N samples of one runtime.
        Index(None, "runtime", "started_at"),
    )

    id: Mapped[int] = mapped_column(SAMPLE_ID, primary_key=True, autoincrement=True)
    runtime: Mapped[str] = mapped_column(NAME)
    # DeploymentSample.at: when the deployment was requested.
    started_at: Mapped[float] = mapped_column(Double)
    duration_s: Mapped[float] = mapped_column(Double)
    outcome: Mapped[str] = mapped_column(String(16))


class ProcessingSampleTable(Base):
    """One measured processing run: ``images`` images of ``app`` on ``runtime``."""

    __tablename__ = "processing_samples"
    __table_args__ = (Index(None, "app", "app_version", "runtime", "at"),)

    id: Mapped[int] = mapped_column(SAMPLE_ID, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(NAME)
    app_version: Mapped[str] = mapped_column(NAME)
    runtime: Mapped[str] = mapped_column(NAME)
    images: Mapped[int] = mapped_column(Integer)
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)


class TransferSampleTable(Base):
    """One measured upload of ``n_bytes`` in ``seconds`` (the bandwidth monitor's input)."""

    __tablename__ = "transfer_samples"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(SAMPLE_ID, primary_key=True, autoincrement=True)
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)
    runtime: Mapped[str] = mapped_column(NAME, default="")


class BatchTable(Base):
    """One submitted batch, from ingest to its measured outcome.

    ``state`` moves queued → running → done | failed, and an operator may cancel a
    queued or running batch or re-queue a failed or cancelled one (see
    ``docs/store.md``); the measured columns are filled by ``Store.finish_batch`` only.
    """

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="state"
        ),
        CheckConstraint("attempts >= 0", name="attempts"),
        # The dispatcher takes the oldest queued batch; listings filter by state.
        Index(None, "state", "created_at"),
        # Unfiltered listings are newest first.
        Index(None, "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    n_images: Mapped[int] = mapped_column(Integer)
    n_bytes: Mapped[int] = mapped_column(BigInteger)
    app: Mapped[str] = mapped_column(NAME)
    app_version: Mapped[str] = mapped_column(NAME)
    mode: Mapped[str] = mapped_column(String(16))
    pinned_runtime: Mapped[str | None] = mapped_column(NAME)
    package_key: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chosen_runtime: Mapped[str | None] = mapped_column(NAME)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    # Per runtime name: Estimate.as_dict() at decision time.
    estimates: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    transfer_s: Mapped[float | None] = mapped_column(Double)
    deployment_s: Mapped[float | None] = mapped_column(Double)
    processing_s: Mapped[float | None] = mapped_column(Double)
    total_s: Mapped[float | None] = mapped_column(Double)
    winner: Mapped[str | None] = mapped_column(NAME)
    cloud_used_s: Mapped[float | None] = mapped_column(Double)
    cloud_wasted_s: Mapped[float | None] = mapped_column(Double)
    results_key: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    # Files rejected at ingest: a list of dicts (the ingest writes file, code, reason).
    skipped: Mapped[list[Any]] = mapped_column(JSON, default=list)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    # SHA-256 (hex) of the request that created the batch (its options and files): a
    # repeated Idempotency-Key with another request is a conflict, not a replay.
    request_digest: Mapped[str | None] = mapped_column(String(64))


class DefaultVersionTable(Base):
    """The application version new batches of ``app`` get (``PUT /v1/models/default``).

    One row per application; none means ``controller.app_version`` from the settings.
    In the database rather than in the object store because it is the controller's
    state like the batches: changed in one transaction, seen by every controller that
    shares the database, read back at start-up with the rest.
    """

    __tablename__ = "default_versions"

    app: Mapped[str] = mapped_column(NAME, primary_key=True)
    version: Mapped[str] = mapped_column(NAME)
    updated_at: Mapped[float] = mapped_column(Double)


class LeaseTable(Base):
    """Which daemon holds the database (``stoic.daemon.lease``): one row per lease.

    Two daemons on one database would each re-queue and run the other's batches, so a
    daemon takes the ``controller`` lease before it touches a batch, renews it while it
    runs (``renewed_at``, ``expires_at``) and deletes it when it stops. ``holder`` is a
    random id of one daemon's run; host, pid and data directory name it for the
    operator, and let a daemon on the same host tell a dead holder from a live one.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(36))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    data_dir: Mapped[str] = mapped_column(Text)
    acquired_at: Mapped[float] = mapped_column(Double)
    renewed_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)


class CloudUsageTable(Base):
    """Cloud seconds held outside a batch's own run, per local day, runtime and cause.

    A batch's pod time is on its row (``batches.cloud_used_s``); a bootstrap run's and
    the inquisitor's probes' belong to no batch, so they are added up here, one row per
    (day, runtime, cause), so that a year of probes a minute stays a few thousand rows.
    Cause ``warm``: the seconds a pod idled warm between batches (``keepalive``).
    ``day`` is the instant of the local midnight that began the day (the operator
    page's "Today"). Pod seconds are counted from ready to torn down, as a batch's.
    """

    __tablename__ = "cloud_usage"
    __table_args__ = (CheckConstraint("cause IN ('bootstrap', 'probe', 'warm')", name="cause"),)

    day: Mapped[float] = mapped_column(Double, primary_key=True)
    runtime: Mapped[str] = mapped_column(NAME, primary_key=True)
    cause: Mapped[str] = mapped_column(String(16), primary_key=True)
    seconds: Mapped[float] = mapped_column(Double)
