"""What ``stoic watch`` has done, in a small SQLite file that survives ``kill -9``.

Exactly once, across restarts of the watcher or of the daemon, rests on one rule: a
batch is written down (its files and its idempotency key) *before* it is sent, in one
transaction. A watcher that dies while sending finds the batch ``planned`` at its next
start and sends it again with the same key and the same files: the daemon answers with
the batch it already stored, or stores it now. Nothing is planned twice, because a
file that belongs to a batch is never offered again.

Tables:

* ``files``: every image the watcher took a decision on: ``planned``/``sent``/
  ``done`` with the batch's key, ``failed`` (its batch failed in the daemon), or
  ``bad`` (the daemon refused it, or it could not be read), with the reason. The size
  and modification time are kept: a ``bad`` file that is copied again (it changes) gets
  another chance; any other file is never sent twice.
* ``batches``: the idempotency key, the deployment, the state (``planned`` → ``sent``
  → ``done`` | ``failed``), the daemon's batch id, where its results were written.

SQLite because the file set grows all season (a JSON file rewritten per batch would
grow with it) and its transactions are what makes "planned" atomic. One writer: the
watcher holds an exclusive lock on ``<state>.lock`` while it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from stoic.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    key TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    deployment TEXT NOT NULL,
    folder TEXT NOT NULL,
    state TEXT NOT NULL,
    batch_id TEXT,
    planned_at REAL NOT NULL,
    sent_at REAL,
    finished_at REAL,
    results_path TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    state TEXT NOT NULL,
    batch_key TEXT REFERENCES batches(key),
    reason TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_batch ON files(batch_key);
"""


class FileState(StrEnum):
    PLANNED = "planned"
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"
    BAD = "bad"


class BatchState(StrEnum):
    PLANNED = "planned"
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A file of a batch: where it is, the name it is sent under, what it was."""

    path: Path
    name: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Batch:
    key: str
    root: Path
    deployment: str
    folder: Path
    """The deployment's folder: the names sent are relative to it."""
    state: BatchState
    batch_id: str | None
    files: tuple[PlannedFile, ...]


class WatchState:
    """The state file, opened and locked (a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[str] | None = None
        self._db: sqlite3.Connection | None = None

    def __enter__(self) -> WatchState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = (self.path.parent / f"{self.path.name}.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise InputError(
                f"{self.path} is in use by another stoic watch ({holder}); stop it first "
                "or give another --state"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._lock = lock
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "WatchState used outside its with block"
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # Reading ---------------------------------------------------------------------

    def known(self, path: Path, size: int, mtime_ns: int) -> bool:
        """Whether a decision on this file stands: any state, except a ``bad`` file
        that has changed since (it may have been copied again)."""
        row = self.db.execute(
            "SELECT state, size, mtime_ns FROM files WHERE path = ?", (str(path),)
        ).fetchone()
        if row is None:
            return False
        return bool(row[0] != FileState.BAD or (row[1], row[2]) == (size, mtime_ns))

    def batches(self, state: BatchState) -> list[Batch]:
        rows = self.db.execute(
            "SELECT key, root, deployment, folder, state, batch_id FROM batches "
            "WHERE state = ? ORDER BY planned_at, key",
            (state.value,),
        ).fetchall()
        return [self._batch(*row) for row in rows]

    def _batch(
        self, key: str, root: str, deployment: str, folder: str, state: str, batch_id: str | None
    ) -> Batch:
        files = self.db.execute(
            "SELECT path, name, size, mtime_ns, sha256 FROM files WHERE batch_key = ? "
            "ORDER BY name",
            (key,),
        ).fetchall()
        return Batch(
            key,
            Path(root),
            deployment,
            Path(folder),
            BatchState(state),
            batch_id,
            tuple(PlannedFile(Path(p), n, s, m, h) for p, n, s, m, h in files),
        )

    def bad_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file refused or unreadable."""
        rows = self.db.execute(
            "SELECT path, reason FROM files WHERE state = ? ORDER BY path", (FileState.BAD.value,)
        ).fetchall()
        return [(p, r or "") for p, r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        return {s: n for s, n in rows}

    # Writing ---------------------------------------------------------------------

    def plan(
        self,
        key: str,
        root: Path,
        deployment: str,
        folder: Path,
        files: Sequence[PlannedFile],
        at: float,
    ) -> None:
        """Write a batch and its files down, before it is sent (one transaction)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO batches (key, root, deployment, folder, state, planned_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, str(root), deployment, str(folder), BatchState.PLANNED.value, at),
            )
            db.executemany(
                "INSERT OR REPLACE INTO files "
                "(path, name, size, mtime_ns, sha256, state, batch_key, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                [
                    (str(f.path), f.name, f.size, f.mtime_ns, f.sha256, FileState.PLANNED, key, at)
                    for f in files
                ],
            )

    def mark_bad(
        self, path: Path, name: str, size: int, mtime_ns: int, reason: str, at: float
    ) -> None:
        """A file refused or unreadable: never sent again unless it changes."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files "
                "(path, name, size, mtime_ns, sha256, state, batch_key, reason, at) "
                "VALUES (?, ?, ?, ?, NULL, ?, NULL, ?, ?)",
                (str(path), name, size, mtime_ns, FileState.BAD, reason, at),
            )

    def unplan(self, key: str) -> None:
        """Forget a planned batch the daemon refused (a 4xx stores nothing): its files
        not marked bad meanwhile are offered again."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM files WHERE batch_key = ? AND state = ?", (key, FileState.PLANNED)
            )
            db.execute("UPDATE files SET batch_key = NULL WHERE batch_key = ?", (key,))
            db.execute("DELETE FROM batches WHERE key = ?", (key,))

    def sent(self, key: str, batch_id: str, skipped: Sequence[tuple[str, str]], at: float) -> None:
        """The daemon stored the batch; ``skipped`` (name, reason) are its refusals."""
        reasons = dict(skipped)
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET state = ?, batch_id = ?, sent_at = ? WHERE key = ?",
                (BatchState.SENT, batch_id, at, key),
            )
            db.execute(
                "UPDATE files SET state = ?, at = ? WHERE batch_key = ?", (FileState.SENT, at, key)
            )
            for name, reason in reasons.items():
                db.execute(
                    "UPDATE files SET state = ?, reason = ? WHERE batch_key = ? AND name = ?",
                    (FileState.BAD, reason, key, name),
                )

    def finished(
        self,
        key: str,
        state: BatchState,
        at: float,
        *,
        results: Path | None = None,
        error: str | None = None,
    ) -> None:
        """The daemon finished the batch: its sent files are ``done`` (or ``failed``)."""
        file_state = FileState.DONE if state is BatchState.DONE else FileState.FAILED
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET state = ?, finished_at = ?, results_path = ?, error = ? "
                "WHERE key = ?",
                (state, at, str(results) if results else None, error, key),
            )
            db.execute(
                "UPDATE files SET state = ?, at = ? WHERE batch_key = ? AND state = ?",
                (file_state, at, key, FileState.SENT),
            )

    def abandon(self, key: str, reason: str, at: float) -> None:
        """A planned batch that cannot be sent as planned (a file changed, the daemon
        refused it whole): ``failed`` with its files, not sent again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET state = ?, finished_at = ?, error = ? WHERE key = ?",
                (BatchState.FAILED, at, reason, key),
            )
            db.execute(
                "UPDATE files SET state = ?, reason = ?, at = ? WHERE batch_key = ?",
                (FileState.FAILED, reason, at, key),
            )

    def paths(self, key: str, state: FileState) -> list[Path]:
        """The files of a batch in ``state``."""
        rows = self.db.execute(
            "SELECT path FROM files WHERE batch_key = ? AND state = ? ORDER BY name",
            (key, state.value),
        ).fetchall()
        return [Path(p) for (p,) in rows]

    def moved(self, old: Path, new: Path) -> None:
        self.db.execute("UPDATE files SET path = ? WHERE path = ?", (str(new), str(old)))
