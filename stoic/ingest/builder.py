"""Image and archive validation, and packaging of the valid images into a tar file.

Each uploaded file is checked as soon as its part has arrived, then appended to a
:class:`~stoic.storage.package.PackageWriter` writing a temporary tar file in ``data_dir/tmp``
and dropped, so memory use does not grow with the batch. Validation checks size limits,
magic bytes, Pillow ``verify()`` and a reduced-scale decode that catches truncated
JPEGs. An archive part (``.zip``, ``.tar``, ``.tar.gz``) is expanded member by member
the same way, refusing members whose path leaves the archive's root and links, and
stopping a member at the per-image limit before it is all read (a zip bomb stops
there).

The work is bounded before it is done, because a small upload must not cost much
(a 460 KB zip of junk "JPEGs" once took 80 s of CPU; a 420 KB PNG of 12,000 ×
12,000 pixels half a gigabyte of memory):

* **bytes**: every byte copied out of the upload counts toward ``api.max_batch_bytes``,
  rejected files included, and is counted while it is copied;
* **pixels**: width × height come from the image's header (Pillow's ``Image.open``
  decodes nothing) and are checked against ``api.max_image_pixels`` and, summed over
  the batch, ``api.max_batch_pixels`` before any decode;
* **parsing**: Pillow reads an image through :class:`_Guarded`, which refuses more
  than :func:`read_budget` reads. Pillow's JPEG header parser skips junk between
  markers one byte and one ``read(1)`` at a time, so a header followed by megabytes of
  zeros cost seconds per image; now it costs a few milliseconds;
* **failures**: the first invalid image rejects the batch at once, unless the client
  asked for ``skip_invalid`` before sending the files, and then at most
  ``api.max_invalid_images`` are skipped;
* **memory**: a JPEG is decoded at 1/8 scale and a PNG not at all (its zlib stream is
  inflated and measured in 64 KiB pieces, :mod:`stoic.ingest.png`); other formats
  (GIF, BMP, TIFF, WebP) are decoded in full, up to ``api.max_image_pixels``;
* **cancellation**: every read checks the upload's ``cancelled`` event, so a client
  that leaves stops the work within one read.

While an image's header is open, its EXIF (capture time, camera) is read too
(:mod:`stoic.ingest.exif`: nothing decoded for it); the builder keeps it per image, in
package order, for the batch's metadata document. The reduced-scale decode also gives
the image's thumbnail (:mod:`stoic.ingest.thumbnail`), which the builder appends to a
second, small tar under the image's member name, for the operator page.

This is the synchronous half of ingest (it runs in the validation pool's threads); the
request-level orchestration that drives it lives in :mod:`stoic.ingest.ingestor`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import struct
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from PIL import Image, UnidentifiedImageError

from stoic.errors import (
    BatchTooLarge,
    CorruptImage,
    EmptyBatch,
    IngestError,
    NotAnImage,
    RequestAborted,
    TooManyInvalid,
    UnsafeArchivePath,
)
from stoic.ingest.exif import ImageMeta, read_meta
from stoic.ingest.options import IngestLimits
from stoic.ingest.png import check_png_data
from stoic.ingest.thumbnail import DRAFT, thumbnail
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


def read_budget(size: int) -> int:
    """Reads Pillow may make to validate an image of ``size`` bytes: a real JPEG
    takes about 80 (its markers, then 64 KiB blocks), a PNG a few per chunk; junk that
    Pillow skips one byte at a time exhausts it after a few milliseconds."""
    return 4096 + size // 256


class _Guarded:
    """A read-only view of a spooled file that counts Pillow's reads and checks the
    upload's cancellation on each; no ``fileno``, so no decoder can go around it."""

    def __init__(
        self, f: BinaryIO, name: str, max_reads: int, cancelled: threading.Event | None
    ) -> None:
        self._f, self._name, self._max = f, name, max_reads
        self._cancelled = cancelled
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self._cancelled is not None and self._cancelled.is_set():
            raise RequestAborted("the upload was cancelled", file=self._name)
        if self.reads > self._max:
            raise CorruptImage(
                f"{self._name}: not a well-formed image (junk where its structure "
                f"should be: over {self._max} reads to parse it)",
                file=self._name,
            )
        return self._f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


_OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")


def _pillow_message(exc: BaseException) -> str:
    """Pillow's message without the object reprs some carry (``cannot identify image
    file <_io.BytesIO object at 0x7f...>``): a client has no use for our memory map."""
    if isinstance(exc, UnidentifiedImageError):
        return "Pillow cannot identify the image data"
    return _OBJECT_REPR.sub("the file", str(exc))[:300]


def _open(fmt: str, f: _Guarded, name: str) -> Image.Image:
    """Open with the plugin of the sniffed format: its header only, nothing decoded.

    Not ``Image.open``: that one warns, or raises, from the process-wide
    ``Image.MAX_IMAGE_PIXELS`` before we can apply our own budget, and tries every
    other plugin on a file its own refused."""
    Image.init()
    factory, _accept = Image.OPEN[fmt]
    f.seek(0)
    return factory(f, name)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ValidImage:
    """What validating an image learnt: its format, its EXIF metadata and its
    thumbnail (None where none could be made)."""

    format: str
    meta: ImageMeta
    thumbnail: bytes | None = None


def validate_image(
    name: str,
    f: BinaryIO,
    size: int,
    limits: IngestLimits,
    *,
    charge_pixels: Callable[[int], None] | None = None,
    cancelled: threading.Event | None = None,
) -> ValidImage:
    """Check one image and read its EXIF, or raise an :class:`IngestError` naming it.

    The pixel count from the header is checked (``limits.max_image_pixels``, then
    ``charge_pixels`` for the batch's budget) before anything is decoded. ``verify()``
    checks structure but not JPEG entropy data, so the image is also decoded in draft
    mode (1/8 scale for JPEG), which reads every byte and fails on a truncated file at
    a fraction of a full decode's cost. A PNG is not decoded at all: its data stream is
    inflated and measured (:mod:`stoic.ingest.png`), in constant memory.
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
    guarded = _Guarded(f, name, read_budget(size), cancelled)
    try:
        with _open(fmt, guarded, name) as im:
            width, height = im.size
            pixels = width * height
            if pixels > limits.max_image_pixels:
                raise BatchTooLarge(
                    f"{name}: {width} × {height} = {pixels} pixels is over the per-image "
                    f"limit of {limits.max_image_pixels} (api.max_image_pixels)",
                    file=name,
                )
            if charge_pixels is not None:
                charge_pixels(pixels)
            meta = read_meta(im)
            im.verify()
        if fmt == "PNG":
            # Its data stream, inflated piece by piece: never the decoded image.
            check_png_data(f, cancelled)
            thumb = None
        else:
            with _open(fmt, guarded, name) as im:
                im.draft("RGB", DRAFT)
                im.load()
                thumb = _thumbnail(im)
    except (
        OSError,
        SyntaxError,
        ValueError,
        UnidentifiedImageError,
        Image.DecompressionBombError,
        zlib.error,
        struct.error,
    ) as exc:
        raise CorruptImage(
            f"{name}: corrupt or truncated {fmt} image: {_pillow_message(exc)}", file=name
        ) from None
    return ValidImage(fmt, meta, thumb)


def _thumbnail(im: Image.Image) -> bytes | None:
    try:
        return thumbnail(im)
    except (OSError, ValueError):
        return None


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
    bytes_seen: int = 0
    pixels: int = 0
    entries: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    first_error: IngestError | None = None
    meta: list[tuple[str, ImageMeta]] = field(default_factory=list)
    """(name in the package, EXIF metadata) of every image added, in package order."""


class PackageBuilder:
    """Validated images → a tar file in ``tmp_dir``. Synchronous (runs in a thread).

    The first invalid image raises at once unless :attr:`skip_invalid` is already set
    (the ingest sets it as soon as the client's ``skip_invalid`` arrives, as a query
    parameter or a form field before the files); then invalid images are collected, at
    most ``limits.max_invalid`` of them, and :meth:`check` decides at the end. Limit and
    path violations raise at once: they reject the batch whatever the client asked.
    ``cancelled`` (set when the client leaves) stops the work at the next read.
    """

    def __init__(
        self,
        tmp_dir: Path,
        limits: IngestLimits,
        *,
        cancelled: threading.Event | None = None,
        skip_invalid: bool = False,
    ) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.skip_invalid = skip_invalid
        self.cancelled = cancelled
        fd, path = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tar", dir=tmp_dir)
        self.path = Path(path)
        self._file = os.fdopen(fd, "wb")
        self._writer = PackageWriter(self._file)
        self._names: set[str] = set()
        self._tmp_dir = tmp_dir
        self.stats = _Stats()
        self.thumbnails = self.spool()
        """A tar of the images' thumbnails, under their member names (small: spooled)."""
        self._thumbs = PackageWriter(cast(BinaryIO, self.thumbnails))

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

    # Budgets -------------------------------------------------------------------------

    def _check_cancelled(self) -> None:
        if self.cancelled is not None and self.cancelled.is_set():
            raise RequestAborted("the upload was cancelled")

    def _charge_bytes(self, n: int) -> None:
        self.stats.bytes_seen += n
        _within(self.stats.bytes_seen, self.limits.max_batch_bytes, "bytes", "files")

    def _charge_pixels(self, n: int) -> None:
        self.stats.pixels += n
        _within(self.stats.pixels, self.limits.max_batch_pixels, "pixels", "images")

    def _charge_entry(self) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_entries:
            raise BatchTooLarge(
                f"archives of the batch hold more than {self.limits.max_entries} entries"
            )

    def _reject(self, exc: IngestError) -> None:
        """An invalid image: reject the batch now, or (``skip_invalid``) note it."""
        if not self.skip_invalid:
            raise exc
        self.stats.skipped.append({"file": exc.file or "", "code": exc.code, "reason": str(exc)})
        if self.stats.first_error is None:
            self.stats.first_error = exc
        if len(self.stats.skipped) > self.limits.max_invalid:
            raise TooManyInvalid(
                f"more than {self.limits.max_invalid} invalid images "
                f"(api.max_invalid_images); first: {self.stats.first_error}",
                file=exc.file,
            )

    # Adding files --------------------------------------------------------------------

    def add_upload(self, filename: str, f: BinaryIO, size: int) -> None:
        """One uploaded file: an image or an archive of images."""
        self._check_cancelled()
        f.seek(0)
        head = f.read(512)
        if is_archive(filename, head):
            self.add_archive(filename, f)
        else:
            self._charge_bytes(size)
            self.add_image(safe_member_name(filename), f, size)

    def add_image(self, name: str, f: BinaryIO, size: int) -> None:
        """Validate one image (its bytes already charged) and add it to the package."""
        try:
            valid = validate_image(
                name,
                f,
                size,
                self.limits,
                charge_pixels=self._charge_pixels,
                cancelled=self.cancelled,
            )
        except (BatchTooLarge, RequestAborted):
            raise
        except IngestError as exc:
            self._reject(exc)
            return
        if self.stats.images + 1 > self.limits.max_images:
            raise BatchTooLarge(
                f"batch has more than {self.limits.max_images} images (api.max_batch_images)"
            )
        unique = self._unique(name)
        f.seek(0)
        self._writer.add_stream(unique, f, size)
        self._names.add(unique)
        if valid.thumbnail is not None:
            self._thumbs.add_bytes(unique, valid.thumbnail)
        self.stats.meta.append((unique, valid.meta))
        self.stats.images += 1
        self.stats.image_bytes += size

    def _copy_member(self, name: str, src: IO[bytes]) -> tempfile.SpooledTemporaryFile[bytes]:
        """Copy an archive member into a spool, refusing one over the per-image limit
        (or the batch's byte budget) before it is all read: a zip bomb stops there."""
        out = self.spool()
        n = 0
        try:
            while chunk := src.read(COPY_BYTES):
                self._check_cancelled()
                n += len(chunk)
                if n > self.limits.max_image_bytes:
                    raise BatchTooLarge(
                        f"{name}: over the per-image limit of {self.limits.max_image_bytes} bytes",
                        file=name,
                    )
                self._charge_bytes(len(chunk))
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
            self._check_zip_entries(filename, f)
            with zipfile.ZipFile(f) as zf:
                for info in zf.infolist():
                    self._check_cancelled()
                    self._charge_entry()
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

    def _check_zip_entries(self, filename: str, f: BinaryIO) -> None:
        """Refuse a zip whose central directory lists more entries than the batch may
        hold *before* ``ZipFile`` parses it (it keeps one object per entry)."""
        end_record = getattr(zipfile, "_EndRecData", None)
        index = getattr(zipfile, "_ECD_ENTRIES_TOTAL", None)
        if end_record is None or index is None:  # pragma: no cover - CPython has both
            return
        f.seek(0)
        record = end_record(f)
        f.seek(0)
        remaining = self.limits.max_entries - self.stats.entries
        if record is not None and int(record[index]) > remaining:
            raise BatchTooLarge(
                f"{filename}: {record[index]} archive entries; the batch may hold "
                f"{self.limits.max_entries}",
                file=filename,
            )

    def _add_tar(self, filename: str, f: BinaryIO) -> None:
        try:
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    self._check_cancelled()
                    self._charge_entry()
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
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # our disk is full, not their archive broken: a 507 (the ingestor's)
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
            raise EmptyBatch("the batch holds no image: choose at least one image")

    def close(self) -> int:
        """Write the tar end markers; return the package size in bytes (the thumbnails
        are rewound, ready to store)."""
        self._writer.close()
        self._file.close()
        self._thumbs.close()
        self.thumbnails.seek(0)
        return self.path.stat().st_size

    def discard(self) -> None:
        # Close the tar stream before its file: tarfile's stream writer otherwise
        # tries to flush into a closed file when it is garbage-collected.
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(Exception):
            self._thumbs.close()
        self.thumbnails.close()
        self.path.unlink(missing_ok=True)


def _within(total: int, limit: int, unit: str, rejected: str) -> None:
    """A batch's running total of ``unit`` stays within ``api.max_batch_<unit>``, rejected
    files counted too (they were read all the same)."""
    if total > limit:
        raise BatchTooLarge(
            f"batch is over {limit} {unit} (api.max_batch_{unit}; rejected {rejected} count too)"
        )
