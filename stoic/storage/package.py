"""The batch package: what the REST ingest writes and the serverless function reads.

A package is a plain, **uncompressed** POSIX tar archive of image files and nothing
else (no directories, links or devices). Uncompressed because JPEGs are already
compressed: gzip would cost CPU at the edge for about 1 % of bytes. Tar because it can
be written and read as a stream: :class:`PackageWriter` appends one image at a time to
any writable binary stream (a file, a pipe, an upload) and :func:`iter_package` reads
members one at a time from any readable stream, so a multi-GB batch never has to sit in
memory at either end.

Member names are checked on read: an absolute path, a ``..`` segment or a non-regular
member raises :class:`~stoic.errors.InputError` naming the member, so a hostile package
cannot make anyone who extracts it write outside a directory.

Key conventions (one place, so ingest, backends and function agree):

* ``batches/<batch_id>/package.tar``  the package
* ``batches/<batch_id>/results.json`` the function's results
* ``batches/<batch_id>/metadata.json`` what the ingest read of each image (EXIF,
  deployment)
* ``batches/<batch_id>/thumbnails.tar`` the operator page's thumbnails, one small JPEG
  per image under the image's own member name
* ``models/<app>/<version>/model.keras`` a trained model (a Keras file, or a tar of a
  SavedModel directory: :mod:`stoic.function.modelfile`), its contract beside it
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from stoic.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""Suffixes the ingest accepts; the function decodes whatever Pillow can."""

MAX_NAME_CHARS = 64
"""The longest app, version or batch id: one limit for ``stoic model push``, ``PUT
/v1/models/default`` and the store's name columns (``String(64)``)."""

_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}$")


def _check_id(kind: str, value: str) -> str:
    if not _ID.fullmatch(value) or ".." in value:
        raise InputError(
            f"invalid {kind} {value[:100]!r}: use 1-{MAX_NAME_CHARS} characters of "
            "A-Z a-z 0-9 . _ - (starting with a letter or digit, no '..')"
        )
    return value


def package_key(batch_id: str) -> str:
    """``batches/<batch_id>/package.tar``."""
    return f"batches/{_check_id('batch id', batch_id)}/package.tar"


def parts_prefix(package: str) -> str:
    """Where the sub-packages cut from ``package`` go (share mode's cloud uploads)."""
    return package.rsplit("/", 1)[0] + "/parts/"


def part_key(package: str, start: int, stop: int) -> str:
    """``<package dir>/parts/<start>-<stop>.tar``: images ``[start, stop)`` of it."""
    return f"{parts_prefix(package)}{start:06d}-{stop:06d}.tar"


def write_part(src: BinaryIO, dst: BinaryIO, start: int, stop: int) -> int:
    """Copy members ``[start, stop)`` of the package ``src`` into a new package ``dst``
    (streamed: only those members are held, one at a time); returns their count."""
    n = 0
    with PackageWriter(dst) as writer:
        for _, name, data in iter_package_range(src, start, stop):
            writer.add_bytes(name, data)
            n += 1
    return n


def chunks_prefix(batch_id: str) -> str:
    """``batches/<batch_id>/chunks/``: share mode's results, one object per chunk."""
    return f"batches/{_check_id('batch id', batch_id)}/chunks/"


def chunk_results_key(batch_id: str, start: int, stop: int) -> str:
    """``batches/<batch_id>/chunks/<start>-<stop>.json``."""
    return f"{chunks_prefix(batch_id)}{start:06d}-{stop:06d}.json"


def results_key(batch_id: str) -> str:
    """``batches/<batch_id>/results.json``."""
    return f"batches/{_check_id('batch id', batch_id)}/results.json"


def metadata_key(batch_id: str) -> str:
    """``batches/<batch_id>/metadata.json``."""
    return f"batches/{_check_id('batch id', batch_id)}/metadata.json"


def thumbnails_key(batch_id: str) -> str:
    """``batches/<batch_id>/thumbnails.tar``."""
    return f"batches/{_check_id('batch id', batch_id)}/thumbnails.tar"


def batch_prefix(batch_id: str) -> str:
    """``batches/<batch_id>/`` (for ``delete_prefix`` when a batch is purged)."""
    return f"batches/{_check_id('batch id', batch_id)}/"


def model_key(app: str, version: str) -> str:
    """``models/<app>/<version>/model.keras``."""
    return f"models/{_check_id('app', app)}/{_check_id('version', version)}/model.keras"


def check_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative member name, else raise InputError."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise InputError(f"package member {name!r}: absolute or malformed path")
    if len(name) > 1 and name[1] == ":":
        raise InputError(f"package member {name!r}: absolute path")
    if any(part == ".." for part in name.split("/")):
        raise InputError(f"package member {name!r}: '..' is not allowed")
    return name


class PackageWriter:
    """Append image files to a tar stream one at a time.

    ``PackageWriter(fileobj)`` writes to an open binary stream (not closed on exit);
    ``PackageWriter.open(path)`` creates a file. Use as a context manager; the tar end
    marker is written on close. Names must be unique, relative and ``..``-free.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        # "w|" is tarfile's pure streaming mode: no seeks, so pipes and sockets work.
        self._tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._own: BinaryIO | None = None
        self._names: set[str] = set()
        self.n_images = 0
        self.n_bytes = 0

    @classmethod
    def open(cls, path: Path | str) -> PackageWriter:
        f = Path(path).open("wb")  # noqa: SIM115  (closed by close())
        writer = cls(f)
        writer._own = f
        return writer

    def add_bytes(self, name: str, data: bytes, mtime: float | None = None) -> None:
        """Append one image given its bytes."""
        self.add_stream(name, io.BytesIO(data), len(data), mtime)

    def add_stream(
        self, name: str, fileobj: BinaryIO, size: int, mtime: float | None = None
    ) -> None:
        """Append one image of known ``size`` read from ``fileobj`` (streamed)."""
        check_member_name(name)
        if name in self._names:
            raise InputError(f"package member {name!r}: duplicate name")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(time.time() if mtime is None else mtime)
        info.mode = 0o644
        self._tar.addfile(info, fileobj)
        self._names.add(name)
        self.n_images += 1
        self.n_bytes += size

    def add_file(self, path: Path | str, name: str | None = None) -> None:
        """Append a file from disk under ``name`` (default: its base name)."""
        p = Path(path)
        with p.open("rb") as f:
            self.add_stream(name or p.name, f, p.stat().st_size, p.stat().st_mtime)

    def close(self) -> None:
        self._tar.close()
        if self._own is not None:
            self._own.close()

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def iter_package(fileobj: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for each member of a package stream, in order.

    Raises InputError for an unsafe or non-regular member, or a stream that is not a
    tar archive. ``fileobj`` may be a network stream (see :func:`iter_package_range`).
    """
    for _, name, data in iter_package_range(fileobj):
        yield name, data


@dataclass
class PackageIndex:
    """Where a package's members start, learnt while reading it.

    The share mode calls one warm function many times on ranges of one package; on a
    file, reaching member 950 meant parsing the 950 tar headers before it (27 µs each
    in tarfile: 26 ms per call, more than the rest of a small call). With an index,
    :func:`iter_package_range` seeks straight to the first member it needs (or to the
    last one it knows, and learns on from there). ``offsets[i]`` is the file offset of
    member ``i``'s header (its extended header, if it has one); ``n_members`` is known
    once a read has reached the end. Only for immutable packages: the caller keys it
    by object key, size and modification time.
    """

    offsets: list[int] = field(default_factory=list)
    n_members: int | None = None


def iter_package_range(
    fileobj: BinaryIO,
    start: int = 0,
    stop: int | None = None,
    index: PackageIndex | None = None,
) -> Generator[tuple[int, str, bytes]]:
    """Yield ``(index, name, bytes)`` for the members ``start <= index < stop``.

    ``index`` is the member's position in the package (0-based). Members before
    ``start`` are checked like the others but their bytes are not read: a seekable
    ``fileobj`` (a file) is read in tarfile's random-access mode, which seeks over
    them (and with a :class:`PackageIndex`, over their headers too); any other stream
    is read sequentially ("r|") and skipped data is discarded as it streams past.
    Reading stops after member ``stop - 1``. An InputError names the package's member
    count if the package ends before ``stop`` (or at or before ``start`` when ``stop``
    is None and ``start > 0``): a selection out of range is the caller's mistake, not
    an empty result.
    """
    if start < 0 or (stop is not None and stop <= start):
        raise InputError(f"invalid member range start={start} stop={stop}")
    seekable = _seekable(fileobj)
    first = 0
    if seekable and index is not None:
        if index.n_members is not None:
            _check_range(start, stop, index.n_members)
        if index.offsets:
            first = min(start, len(index.offsets) - 1)
            fileobj.seek(index.offsets[first])
        elif fileobj.tell() != 0:
            index = None  # the archive does not start the stream: no offsets to learn
    else:
        index = None
    try:
        if seekable:
            # "r:" starts at the stream's position: a header offset from the index.
            tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115  (closed below)
        else:
            tar = tarfile.open(fileobj=fileobj, mode="r|")  # noqa: SIM115
    except tarfile.TarError as exc:
        raise InputError(f"package is not a tar archive: {exc}") from None
    i = first - 1
    with tar:
        try:
            for i, member in enumerate(tar, start=first):
                check_member_name(member.name)
                if not member.isfile():
                    raise InputError(
                        f"package member {member.name!r}: not a regular file "
                        "(a package holds image files only)"
                    )
                if index is not None and i == len(index.offsets):
                    if i == 0 and member.offset != 0:  # a global header before it
                        index = None
                    else:
                        index.offsets.append(member.offset)
                if i < start:
                    continue
                extracted = tar.extractfile(member)
                if extracted is None:  # pragma: no cover - isfile() guarantees a stream
                    raise InputError(f"package member {member.name!r}: unreadable")
                yield i, member.name, extracted.read()
                if stop is not None and i + 1 >= stop:
                    return
        except tarfile.TarError as exc:
            raise InputError(f"package is corrupt: {exc}") from None
    if index is not None:
        index.n_members = i + 1
    _check_range(start, stop, i + 1)


def _check_range(start: int, stop: int | None, n: int) -> None:
    """InputError if ``start:stop`` is beyond a package of ``n`` members."""
    if stop is not None and stop > n:
        end = f"stop={stop}"
    elif stop is None and start > 0 and start >= n:
        end = f"start={start}"
    else:
        return
    raise InputError(
        f"member range start={start} stop={stop}: {end} is beyond the package's {n} members"
    )


def _seekable(fileobj: BinaryIO) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def write_package(fileobj: BinaryIO, images: Iterator[tuple[str, bytes]]) -> int:
    """Write ``(name, bytes)`` pairs as a package; return the number of images."""
    with PackageWriter(fileobj) as writer:
        for name, data in images:
            writer.add_bytes(name, data)
        return writer.n_images


__all__ = [
    "IMAGE_SUFFIXES",
    "PackageIndex",
    "PackageWriter",
    "batch_prefix",
    "check_member_name",
    "iter_package",
    "iter_package_range",
    "metadata_key",
    "model_key",
    "package_key",
    "results_key",
    "thumbnails_key",
    "write_package",
]
