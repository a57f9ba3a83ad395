"""One daemon per data directory: an advisory lock held for the daemon's whole life.

Two daemons on one ``data_dir`` would corrupt each other: the second one's start-up
re-queues the first one's *running* batch (which then runs twice at once), reaps its
function processes and deletes its in-flight upload's temporary file, all before it
notices that its port is taken. So the very first thing a daemon does, before any of
its build steps, is take an exclusive ``flock(2)`` on ``data_dir/stoic.lock``; a second
daemon fails at once with :class:`~stoic.errors.DataDirInUse` naming the holder's pid.

Why ``flock`` and not a pid file: the kernel drops the lock when its open file
description goes away, on any exit (``kill -9`` and a power cut's reboot included), so
the lock is never stale and nobody has to guess whether a recorded pid is still the
daemon. The pid written into the file only serves the error message. The descriptor
is close-on-exec (Python's default), so the function processes the daemon starts do
not inherit the lock and cannot keep it alive after the daemon dies. The file is never
deleted: unlinking a lock file lets a third process lock a fresh inode while a second
still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from stoic.errors import ConfigError, DataDirInUse

LOCK_NAME = "stoic.lock"


class DataDirLock:
    """The exclusive lock on one data directory. :meth:`acquire` is idempotent for
    the same object (the CLI takes the lock, then hands it to the controller)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUse` naming the holder's pid
        (:class:`~stoic.errors.ConfigError` where no file can be made: ``/proc/self``)."""
        if self._fd is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"data_dir {self.data_dir}: cannot create {LOCK_NAME} there ({exc.strerror or exc})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirInUse(str(self.data_dir.resolve()), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays, emptied). Safe to call when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str | None:
    """What the holder wrote ("pid N host H"), or None while it has not written yet."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None
