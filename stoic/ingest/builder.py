"""Image and archive validation, and packaging of the valid images into a tar file.

Each uploaded file is checked as soon as its part has arrived, then appended to a
:class:`~stoic.storage.package.PackageWriter` writing a temporary tar file in ``data_dir/tmp``
and dropped, so memory use does not grow with the batch. Validation checks size limits,
magic bytes, Pillow ``verify()`` and a reduced-scale decode that catches truncated
JPEGs. An archive part (``.zip``, ``.tar``, ``.tar.gz``) is expanded member by member
the same way, refusing members whose path leaves the archive's root and links, and
stopping a member at the per-image limit before it is all read (a zip bomb stops
there).

This is the synchronous half of ingest (it runs in a worker thread); the request-level
orchestration that drives it lives in :mod:`stoic.ingest.ingestor`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from PIL import Image, UnidentifiedImageError

from stoic.errors import (
    BatchTooLarge,
    CorruptImage,
    EmptyBatch,
    IngestError,
    NotAnImage,
    UnsafeArchivePath,
)
from stoic.ingest.options import IngestLimits
from stoic.storage.package import PackageWriter

SPOOL_BYTES = 1024 * 1024
"""A part stays in memory up to this size, then rolls over to a file in ``tmp_dir``."""

COPY_BYTES = 1024 * 1024

TMP_PREFIX = "ingest-"

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WEBP"),
)


# Validation of one image ---------------------------------------------------------------


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes announce, or None."""
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "WEBP" and head[:4] != b"RIFF":
                continue
            return name
    return None


def is_archive(name: str, head: bytes) -> bool:
    """A zip, gzip (tar.gz) or tar stream, by content; the name only breaks ties."""
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x1f\x8b":
        return True
    if head[257:262] == b"ustar":
        return True
    return name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz"))


def validate_image(name: str, f: BinaryIO, size: int, limits: IngestLimits) -> str:
    """Check one image; return its format or raise an :class:`IngestError` naming it.

    ``verify()`` checks structure but not JPEG entropy data, so the image is also
    decoded in draft mode (1/8 scale for JPEG), which reads every byte and fails on a
    truncated file at a fraction of a full decode's cost.
    """
    if size > limits.max_image_bytes:
        raise BatchTooLarge(
            f"{name}: {size} bytes is over the per-image limit of {limits.max_image_bytes}",
            file=name,
        )
    f.seek(0)
    head = f.read(16)
    fmt = sniff_format(head)
    if fmt is None:
        raise NotAnImage(
            f"{name}: not an image (JPEG, PNG, GIF, BMP, TIFF or WebP expected)", file=name
        )
    try:
        f.seek(0)
        with Image.open(f) as im:
            im.verify()
        f.seek(0)
        with Image.open(f) as im:
            im.draft("RGB", (1, 1))
            im.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        UnidentifiedImageError,
        Image.DecompressionBombError,
    ) as exc:
        raise CorruptImage(f"{name}: corrupt or truncated {fmt} image: {exc}", file=name) from None
    return fmt


def safe_member_name(name: str) -> str:
    """Normalise a client-given path (``./a/b.jpg`` → ``a/b.jpg``) or raise
    :class:`UnsafeArchivePath` for one that is absolute or climbs out with ``..``."""
    raw = name.replace("\\", "/")
    if not raw or raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or "\x00" in raw:
        raise UnsafeArchivePath(f"{name}: absolute or malformed path", file=name)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchivePath(f"{name}: path leaves the archive's root ('..')", file=name)
    if not parts:
        raise UnsafeArchivePath(f"{name}: empty path", file=name)
    return "/".join(parts)


def _ignored(path: str) -> bool:
    """macOS resource forks and hidden files that archivers add: not images, not errors."""
    parts = path.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


# The package being built ---------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    images: int = 0
    image_bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    first_error: IngestError | None = None


class PackageBuilder:
    """Validated images → a tar file in ``tmp_dir``. Synchronous (runs in a thread).

    Invalid images are collected rather than raised, because ``skip_invalid`` may arrive
    after the files in the form; :meth:`check` decides at the end. Limit and path
    violations raise at once: they reject the batch whatever the client asked.
    """

    def __init__(self, tmp_dir: Path, limits: IngestLimits) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        fd, path = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tar", dir=tmp_dir)
        self.path = Path(path)
        self._file = os.fdopen(fd, "wb")
        self._writer = PackageWriter(self._file)
        self._names: set[str] = set()
        self._tmp_dir = tmp_dir
        self.stats = _Stats()

    @property
    def n_images(self) -> int:
        return self.stats.images

    def spool(self) -> tempfile.SpooledTemporaryFile[bytes]:
        return tempfile.SpooledTemporaryFile(
            max_size=SPOOL_BYTES, prefix=TMP_PREFIX, dir=str(self._tmp_dir)
        )

    def _unique(self, name: str) -> str:
        if name not in self._names:
            return name
        p = PurePosixPath(name)
        k = 2
        while (candidate := str(p.with_name(f"{p.stem}-{k}{p.suffix}"))) in self._names:
            k += 1
        return candidate

    def _reject(self, exc: IngestError) -> None:
        self.stats.skipped.append({"file": exc.file or "", "code": exc.code, "reason": str(exc)})
        if self.stats.first_error is None:
            self.stats.first_error = exc

    def add_upload(self, filename: str, f: BinaryIO, size: int) -> None:
        """One uploaded file: an image or an archive of images."""
        f.seek(0)
        head = f.read(512)
        if is_archive(filename, head):
            self.add_archive(filename, f)
        else:
            self.add_image(safe_member_name(filename), f, size)

    def add_image(self, name: str, f: BinaryIO, size: int) -> None:
        try:
            validate_image(name, f, size, self.limits)
        except BatchTooLarge:
            raise
        except IngestError as exc:
            self._reject(exc)
            return
        if self.stats.images + 1 > self.limits.max_images:
            raise BatchTooLarge(
                f"batch has more than {self.limits.max_images} images (api.max_batch_images)"
            )
        if self.stats.image_bytes + size > self.limits.max_batch_bytes:
            raise BatchTooLarge(
                f"batch is over {self.limits.max_batch_bytes} bytes (api.max_batch_bytes)"
            )
        unique = self._unique(name)
        f.seek(0)
        self._writer.add_stream(unique, f, size)
        self._names.add(unique)
        self.stats.images += 1
        self.stats.image_bytes += size

    def _copy_member(self, name: str, src: IO[bytes]) -> tempfile.SpooledTemporaryFile[bytes]:
        """Copy an archive member into a spool, refusing one over the per-image limit
        before it is all read (a zip bomb stops at the limit)."""
        out = self.spool()
        n = 0
        try:
            while chunk := src.read(COPY_BYTES):
                n += len(chunk)
                if n > self.limits.max_image_bytes:
                    raise BatchTooLarge(
                        f"{name}: over the per-image limit of {self.limits.max_image_bytes} bytes",
                        file=name,
                    )
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        return out

    def _add_member(self, archive: str, raw_name: str, src: IO[bytes]) -> None:
        name = safe_member_name(raw_name)
        if _ignored(name):
            return
        with self._copy_member(name, src) as spooled:
            size = spooled.tell()
            head = (spooled.seek(0), spooled.read(512))[1]
            if is_archive(name, head) and sniff_format(head) is None:
                self._reject(NotAnImage(f"{name}: nested archives are not supported", file=name))
                return
            self.add_image(name, spooled, size)  # type: ignore[arg-type]

    def add_archive(self, filename: str, f: BinaryIO) -> None:
        f.seek(0)
        head = f.read(4)
        f.seek(0)
        if head == b"PK\x03\x04" or filename.lower().endswith(".zip"):
            self._add_zip(filename, f)
        else:
            self._add_tar(filename, f)

    def _add_zip(self, filename: str, f: BinaryIO) -> None:
        try:
            with zipfile.ZipFile(f) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        safe_member_name(info.filename)
                        continue
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise UnsafeArchivePath(
                            f"{info.filename}: links are not allowed in an archive",
                            file=info.filename,
                        )
                    safe_member_name(info.filename)
                    with zf.open(info) as src:
                        self._add_member(filename, info.filename, src)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
            raise CorruptImage(
                f"{filename}: not a readable zip archive: {exc}", file=filename
            ) from None
        except RuntimeError as exc:  # encrypted member
            raise CorruptImage(f"{filename}: {exc}", file=filename) from None

    def _add_tar(self, filename: str, f: BinaryIO) -> None:
        try:
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    if member.isdir():
                        safe_member_name(member.name)
                        continue
                    if member.issym() or member.islnk():
                        raise UnsafeArchivePath(
                            f"{member.name}: links are not allowed in an archive", file=member.name
                        )
                    if not member.isfile():
                        raise UnsafeArchivePath(
                            f"{member.name}: not a regular file", file=member.name
                        )
                    safe_member_name(member.name)
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - isfile() guarantees a stream
                        continue
                    self._add_member(filename, member.name, src)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptImage(
                f"{filename}: not a readable tar archive: {exc}", file=filename
            ) from None

    def check(self, skip_invalid: bool) -> None:
        """Raise for invalid images (unless skipping them) or an empty batch."""
        if self.stats.first_error is not None and not skip_invalid:
            raise self.stats.first_error
        if self.stats.images == 0:
            if self.stats.first_error is not None:
                raise EmptyBatch(
                    f"no valid image in the batch ({len(self.stats.skipped)} skipped; "
                    f"first: {self.stats.first_error})",
                    file=self.stats.first_error.file,
                )
            raise EmptyBatch("the batch holds no image")

    def close(self) -> int:
        """Write the tar end marker; return the package size in bytes."""
        self._writer.close()
        self._file.close()
        return self.path.stat().st_size

    def discard(self) -> None:
        # Close the tar stream before its file: tarfile's stream writer otherwise
        # tries to flush into a closed file when it is garbage-collected.
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._file.close()
        self.path.unlink(missing_ok=True)
