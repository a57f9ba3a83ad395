"""Free space on the disks the daemon writes to, and what to do when one fills.

An upload is written twice on the edge: its package is built under ``data_dir/tmp``,
then copied into the object store (``data_dir/objects`` by default), and its row goes
into the database (``data_dir/stoic.db`` by default). When one of those disks fills,
the write fails with ``ENOSPC`` part-way through a package that can be gigabytes
long. :class:`DiskWatch` keeps an operator-set floor (``objectstore.min_free_bytes``)
on each disk instead:

* :meth:`DiskWatch.require_room` refuses an upload (507,
  :class:`~stoic.errors.InsufficientStorage`, naming the disk) before its body is read
  when a disk has less than the floor plus the upload's ``Content-Length`` free;
* :meth:`DiskWatch.states` is what ``/readyz`` and ``stoic_disk_*`` report: each
  disk's free bytes, and whether it is *full*: below the floor, or its last write
  found no space (:meth:`DiskWatch.failed`). Such a failure is forgotten after a
  write there succeeds (:meth:`DiskWatch.written`) or once the disk has
  :data:`FREED_BYTES` (or the floor, if larger) more free than when it failed, so a
  daemon that nobody sends uploads to while it is not ready still becomes ready when
  space is freed.

Disks are named by role ("object store", "data directory"): the names reach the
client and the unauthenticated ``/readyz``; the paths reach only the log.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stoic.errors import InsufficientStorage

OBJECTS = "object store"
DATA = "data directory"
DATABASE = "database"
"""The disks' names, as the client and ``/readyz`` see them."""

FREED_BYTES = 1024**2
"""Growth of free space, since a write failed, that counts as space freed."""


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem of ``path`` (or of its
    nearest existing parent: the directories are made on first use)."""
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return shutil.disk_usage(Path.cwd()).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass(frozen=True, slots=True)
class DiskState:
    """One disk as :meth:`DiskWatch.states` finds it."""

    name: str
    free_bytes: int | None  # None: the filesystem could not be asked
    min_free_bytes: int
    failed: bool  # its last write found no space, and no space was freed since

    @property
    def full(self) -> bool:
        return self.failed or self.free_bytes is None or self.free_bytes < self.min_free_bytes

    def describe(self) -> str:
        if self.free_bytes is None:
            return f"{self.name}: cannot read its free space; see the daemon's log"
        free = f"{human_bytes(self.free_bytes)} free"
        if self.failed:
            return f"{self.name}: full, the last write found no space ({free})"
        if self.free_bytes < self.min_free_bytes:
            floor = human_bytes(self.min_free_bytes)
            return f"{self.name}: full, {free}, below {floor} (objectstore.min_free_bytes)"
        return f"{self.name}: {free}"


class DiskWatch:
    """The disks of one daemon (name → a directory on it) and their floor.

    Thread-safe: uploads note failures from the ingest's threads while ``/readyz``
    reads. ``usage`` returns a directory's free bytes (tests pass a small disk's)."""

    def __init__(
        self,
        disks: Mapping[str, Path],
        min_free_bytes: int,
        usage: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.disks = dict(disks)
        self.min_free_bytes = min_free_bytes
        self._usage = usage
        self._failed: dict[str, int] = {}  # name → free bytes when a write failed there
        self._lock = threading.Lock()

    def _free(self, name: str) -> int | None:
        try:
            return self._usage(self.disks[name])
        except OSError:
            return None

    def states(self) -> list[DiskState]:
        """Every disk, in the order given; forgets failures whose space was freed."""
        out = []
        for name in self.disks:
            free = self._free(name)
            with self._lock:
                at = self._failed.get(name)
                if at is not None and free is not None and free - at >= self._freed():
                    del self._failed[name]
                    at = None
            out.append(DiskState(name, free, self.min_free_bytes, at is not None))
        return out

    def _freed(self) -> int:
        return max(FREED_BYTES, self.min_free_bytes)

    @property
    def full(self) -> list[DiskState]:
        return [d for d in self.states() if d.full]

    def require_room(self, n_bytes: int | None) -> None:
        """Raise :class:`InsufficientStorage` naming the first disk that has less than
        the floor free, plus ``n_bytes`` (an upload's size, when known) on the disks
        the package is written to (the database's gets a row)."""
        for d in self.states():
            need = self.min_free_bytes + (0 if d.name == DATABASE else n_bytes or 0)
            if d.free_bytes is not None and d.free_bytes < need:
                raise InsufficientStorage(
                    d.name,
                    f"{human_bytes(d.free_bytes)} free; the upload needs "
                    f"{human_bytes(need)} with the floor",
                )

    def failed(self, name: str) -> None:
        """A write on disk ``name`` found no space."""
        if name not in self.disks:
            return
        free = self._free(name)
        with self._lock:
            self._failed[name] = free if free is not None else 0

    def written(self) -> None:
        """A write succeeded on every disk (an upload was stored)."""
        with self._lock:
            self._failed.clear()
