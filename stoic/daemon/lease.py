"""One daemon per database and object store: a lease, a marker and a heartbeat.

The data directory's lock (:mod:`stoic.daemon.lock`) stops a second daemon on the same
``data_dir``. Two daemons with *different* data directories can still share one
``database.url`` and one ``objectstore.path``; the second one's start-up then re-queued
the first one's running batch and ran it again. So, before it re-queues or runs
anything, a daemon also takes:

* a **lease in the database** (the ``leases`` row ``controller``: holder id, host,
  pid, data directory, renewal and expiry instants), renewed every third of
  ``database.lease_ttl_s`` by a supervised heartbeat and deleted when it stops;
* a **marker in the object store** (:data:`MARKER_KEY`, the same fields as JSON, and
  the holder's database), renewed and deleted with it, for a second daemon that
  shares the objects but not the database.

A daemon that finds either held refuses to start with
:class:`~stoic.errors.LeaseHeld`, one line naming the holder. A lease is **stale**,
and taken over, when it has expired (its holder stopped renewing:
``database.lease_ttl_s`` after a crash elsewhere), or at once when its holder was on
this host and is gone: its pid is dead, or it named this data directory, whose lock
this daemon now holds (a restart after ``kill -9``).

A heartbeat that finds the lease taken over (its daemon stalled for longer than the
TTL, and another one took it) stops the daemon: it drains, claims nothing more, and
``/readyz`` fails. A heartbeat that cannot reach the database retries on the next
beat; the lease stays this daemon's until another daemon takes it.

The marker is advisory: the object store has no compare-and-swap, so two daemons
that share the objects but not the database and start within the same instant can
both write it. The database lease has no such gap.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from stoic.clock import Clock
from stoic.errors import LeaseHeld, ObjectNotFound, StoicError
from stoic.logging import get_logger
from stoic.storage.objectstore import ObjectStore
from stoic.store.lease import Lease, Leases
from stoic.store.store import Store

log = get_logger("stoic.lease")

LEASE_NAME = "controller"
MARKER_KEY = "daemon/lease.json"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(lease: Lease, now: float) -> str:
    """``pid 4242 host edge1, data dir /var/lib/stoic, renewed 3 s ago``."""
    ago = max(0.0, now - lease.renewed_at)
    return f"pid {lease.pid} host {lease.host}, data dir {lease.data_dir}, renewed {ago:.0f} s ago"


class DaemonLease:
    """This daemon's lease on ``store`` (named ``database`` in messages) and marker in
    ``objects`` (named ``where``)."""

    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        *,
        data_dir: Path,
        database: str,
        where: str,
        ttl_s: float,
        clock: Clock,
        on_lost: Callable[[Lease | None], None],
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.leases = Leases(store)
        self.objects = objects
        self.database, self.where = database, where
        self.ttl_s = ttl_s
        self.clock = clock
        self.on_lost = on_lost
        self._alive = alive
        now = clock.now()
        self.mine = Lease(
            name=LEASE_NAME,
            holder=str(uuid.uuid4()),
            host=socket.gethostname(),
            pid=os.getpid(),
            data_dir=str(data_dir.resolve()),
            acquired_at=now,
            renewed_at=now,
            expires_at=now + ttl_s,
        )
        self.held = False

    @property
    def period_s(self) -> float:
        return self.ttl_s / 3

    def stale(self, other: Lease) -> bool:
        """Whether ``other`` may be taken over (see the module docstring)."""
        if other.expires_at <= self.clock.now():
            return True
        if other.host != self.mine.host:
            return False
        return other.data_dir == self.mine.data_dir or not self._alive(other.pid)

    def _fresh(self) -> Lease:
        now = self.clock.now()
        return replace(self.mine, renewed_at=now, expires_at=now + self.ttl_s)

    def acquire(self) -> None:
        """Take the lease, then the marker; raise :class:`LeaseHeld` naming a live
        holder of either (having taken neither)."""
        self.mine = self._fresh()
        taken = self.leases.take(self.mine, stale=self.stale)
        now = self.clock.now()
        if not taken.won:
            assert taken.other is not None
            raise LeaseHeld(f"database {self.database}", describe(taken.other, now))
        self.held = True
        if taken.other is not None:
            log.warning(
                "took over the stale lease of another daemon on this database",
                previous=describe(taken.other, now),
            )
        marker = self._read_marker()
        if marker is not None:
            other, database = marker
            if other.holder != self.mine.holder and not self.stale(other):
                self.release()
                holder = f"{describe(other, now)}, database {database}"
                raise LeaseHeld(f"object store {self.where}", holder)
        self._write_marker()

    def renew(self) -> bool:
        """One heartbeat: False when another daemon has taken the lease over."""
        self.mine = self._fresh()
        if not self.leases.renew(
            LEASE_NAME,
            self.mine.holder,
            renewed_at=self.mine.renewed_at,
            expires_at=self.mine.expires_at,
        ):
            self.held = False
            return False
        try:
            self._write_marker()
        except StoicError as exc:  # a full disk: the database lease still holds
            log.warning("lease: the object store marker was not renewed", error=str(exc))
        return True

    def release(self) -> None:
        """Delete the lease and the marker, if they are still this daemon's."""
        if not self.held:
            return
        self.held = False
        try:
            marker = self._read_marker()
            if marker is not None and marker[0].holder == self.mine.holder:
                self.objects.delete(MARKER_KEY)
        except StoicError as exc:
            log.warning("lease: the object store marker was not removed", error=str(exc))
        self.leases.release(LEASE_NAME, self.mine.holder)

    async def run(self) -> None:
        """The heartbeat: renew every :attr:`period_s` until cancelled, or until the
        lease is found taken over (then ``on_lost``, and return)."""
        while True:
            await asyncio.sleep(self.period_s)
            try:
                renewed = await asyncio.to_thread(self.renew)
            except StoicError as exc:
                log.warning("lease: renewal failed; retrying at the next beat", error=str(exc))
                continue
            if not renewed:
                holder = await asyncio.to_thread(self.leases.get, LEASE_NAME)
                self.on_lost(holder)
                return

    def _read_marker(self) -> tuple[Lease, str] | None:
        """The marker's lease and database, or None (absent or unreadable)."""
        try:
            data = json.loads(self.objects.get_bytes(MARKER_KEY))
            database = str(data.pop("database"))
            return Lease(**data), database
        except ObjectNotFound:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("lease: ignoring an unreadable object store marker", error=str(exc))
            return None

    def _write_marker(self) -> None:
        body = {**asdict(self.mine), "database": self.database}
        self.objects.put_bytes(MARKER_KEY, json.dumps(body).encode())
