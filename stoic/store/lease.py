"""Lease rows (``leases``): taken, renewed and released in one write transaction each.

The policy (when a holder is stale, what a refusal says, the heartbeat) is the
daemon's, :mod:`stoic.daemon.lease`; this module only makes each step atomic. A take
reads the row and replaces it in one ``BEGIN IMMEDIATE`` transaction on SQLite, or
under ``SELECT ... FOR UPDATE`` on PostgreSQL, so two daemons starting together cannot
both win: the loser of an insert race retries once and then sees the winner's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from stoic.errors import StoreError
from stoic.store.store import Store, record_of
from stoic.store.tables import LeaseTable


@dataclass(frozen=True, slots=True)
class Lease:
    """One holder's lease on ``name``."""

    name: str
    holder: str
    host: str
    pid: int
    data_dir: str
    acquired_at: float
    renewed_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`Leases.take` found: ``won``, and ``other``: the live holder that
    kept the lease (lost), or the stale holder it was taken from (won; None if free)."""

    won: bool
    other: Lease | None


def _lease(row: LeaseTable) -> Lease:
    return record_of(Lease, row)


class Leases:
    """The lease rows of one store (it shares the store's engine and sessions)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, name: str) -> Lease | None:
        with self._store._session(write=False) as s:
            row = s.get(LeaseTable, name)
            return _lease(row) if row is not None else None

    def take(self, mine: Lease, *, stale: Callable[[Lease], bool]) -> Taken:
        """Hold ``mine.name`` as ``mine.holder`` if it is free, ours already, or held
        by a lease that ``stale`` finds stale (then replaced)."""
        try:
            return self._take(mine, stale)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        return self._take(mine, stale)  # lost an insert race: the winner's row is there

    def _take(self, mine: Lease, stale: Callable[[Lease], bool]) -> Taken:
        with self._store._session(write=True) as s:
            row = s.scalars(
                select(LeaseTable).where(LeaseTable.name == mine.name).with_for_update()
            ).one_or_none()
            if row is None:
                s.add(LeaseTable(**asdict(mine)))
                return Taken(True, None)
            held = _lease(row)
            if held.holder == mine.holder:
                return Taken(True, None)
            if not stale(held):
                return Taken(False, held)
            for column, value in asdict(mine).items():
                setattr(row, column, value)
            return Taken(True, held)

    def renew(self, name: str, holder: str, *, renewed_at: float, expires_at: float) -> bool:
        """Move the expiry of ``holder``'s lease on; False when it is not theirs any
        more (another daemon took it over after it expired)."""
        with self._store._session(write=True) as s:
            result = s.execute(
                update(LeaseTable)
                .where(LeaseTable.name == name, LeaseTable.holder == holder)
                .values(renewed_at=renewed_at, expires_at=expires_at)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (a no-op when ``holder`` no longer has it)."""
        with self._store._session(write=True) as s:
            s.execute(
                delete(LeaseTable)
                .where(LeaseTable.name == name, LeaseTable.holder == holder)
                .execution_options(synchronize_session=False)
            )
