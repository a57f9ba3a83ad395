"""Which files under the watched folders are images ready to send.

A file is *ready* once its size and modification time have not changed for
``stable_s`` seconds: a card being copied, an rsync or FTP upload in progress, write
the file a piece at a time, and a half-written image must never be sent. The scan is
the truth (a file system event can be lost, a network mount sends none); events
(``watchfiles``) only make the next scan come sooner. Time is the caller's clock, so a
test moves it by hand.

Each file belongs to a *deployment*, a camera placement: the first folder under the
watched folder (``DIR/cam01/100RECNX/IMG_0001.JPG`` → ``cam01``, sent as
``100RECNX/IMG_0001.JPG``), or the watched folder itself for the files directly in it.
A folder name that is not a valid deployment label has its other characters replaced
by ``_`` (``cam#1`` → ``cam_1``). Hidden files and folders (``.name``: rsync's
temporary files, macOS's ``._`` companions, the state file) are never looked at.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from stoic.ingest.options import DEPLOYMENT
from stoic.storage.package import IMAGE_SUFFIXES


def deployment_label(folder_name: str) -> str:
    """A folder's name as a deployment label (``stoic.ingest.options.DEPLOYMENT``)."""
    label = re.sub(r"[^\w .-]", "_", folder_name.strip())[:64] or "_"
    return label if DEPLOYMENT.fullmatch(label) else ("_" + label)[:64]


class Entry(NamedTuple):
    """An image file as one scan saw it: cheap to make, for the many files a scan sees
    and the watcher has already decided on (pathlib costs ~50 µs a file)."""

    path: str
    size: int
    mtime_ns: int
    root: Path
    top: str | None
    """The first folder under the root (the deployment's folder), None for a file
    directly in the root."""
    name: str
    """The path under the deployment's folder, with ``/``."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An image file the watcher considers sending."""

    path: Path
    root: Path
    folder: Path
    """Its deployment's folder; ``name`` is relative to it."""
    deployment: str
    name: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return str(self.path)


@functools.lru_cache(maxsize=4096)
def _label(folder_name: str) -> str:
    return deployment_label(folder_name)


def candidate(e: Entry) -> Candidate:
    folder = e.root / e.top if e.top is not None else e.root
    return Candidate(Path(e.path), e.root, folder, _label(folder.name), e.name, e.size, e.mtime_ns)


def _walk(root: str) -> Iterator[os.DirEntry[str]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        yield e
        except OSError:
            continue  # gone or unreadable meanwhile: the next scan sees it again


def scan(roots: Sequence[Path], exclude: Sequence[Path] = ()) -> Iterator[Entry]:
    """Every image file under ``roots`` (not under ``exclude``)."""
    skip = tuple(str(x) + os.sep for x in exclude)
    for root in roots:
        prefix = len(str(root)) + 1
        for e in _walk(str(root)):
            _, dot, suffix = e.name.rpartition(".")
            if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
                continue
            if skip and e.path.startswith(skip):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = e.path[prefix:].replace(os.sep, "/")
            top, sep, rest = rel.partition("/")
            if sep:
                yield Entry(e.path, st.st_size, st.st_mtime_ns, root, top, rest)
            else:
                yield Entry(e.path, st.st_size, st.st_mtime_ns, root, None, rel)


class Stability:
    """Tells when a file has stopped changing. ``seen`` once per scan; a file is
    ready ``stable_s`` after its size and modification time last changed (as seen by
    the scans: a change between two scans resets the wait at the second)."""

    def __init__(self, stable_s: float) -> None:
        self.stable_s = stable_s
        self._since: dict[str, tuple[int, int, float]] = {}

    def seen(self, e: Entry, now: float) -> bool:
        """Record this scan's view of ``e``; whether it is ready now."""
        last = self._since.get(e.path)
        if last is None or last[:2] != (e.size, e.mtime_ns):
            self._since[e.path] = (e.size, e.mtime_ns, now)
            return self.stable_s <= 0
        return now - last[2] >= self.stable_s

    def forget(self, keep: set[str]) -> None:
        """Drop the files not seen in the last scan (gone, or decided on)."""
        for path in set(self._since) - keep:
            del self._since[path]
