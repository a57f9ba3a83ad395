"""Batch ingest: validate uploaded images as they stream in and package them.

``POST /v1/batches`` may carry thousands of images (the paper's largest hourly batch
is 2,450). Starlette's form parser keeps every small file in memory until the whole
request is read, so this module parses ``multipart/form-data`` itself, part by part:

1. each file part is spooled (in memory up to 1 MiB, then in a file under
   ``data_dir/tmp``) while it arrives;
2. when the part ends it is validated (size limits, magic bytes, Pillow ``verify()``
   and a reduced-scale decode that catches truncated JPEGs) and appended to a
   :class:`~stoic.package.PackageWriter` writing a temporary tar file, then dropped;
   an archive part (``.zip``, ``.tar``, ``.tar.gz``) is expanded member by member the
   same way, refusing members whose path leaves the archive's root;
3. at the end, the tar is streamed to the object store with ``put_stream`` and the
   batch row is inserted; only then does the API answer ``202``.

So the server holds at most one image (plus one 1 MiB chunk) in memory, whatever the
batch size. Any failure removes the temporary files and the partial object and inserts
no row: a rejected upload leaves nothing behind. Errors are the typed
:class:`~stoic.errors.IngestError` subclasses, which carry the HTTP status and name the
file or field at fault.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from stoic.clock import Clock
from stoic.errors import (
    BatchTooLarge,
    CorruptImage,
    EmptyBatch,
    IngestError,
    InvalidField,
    NotAnImage,
    UnsafeArchivePath,
)
from stoic.model import Mode
from stoic.objectstore import ObjectStore
from stoic.package import PackageWriter, package_key
from stoic.settings import ApiSettings
from stoic.store.store import BatchRecord, Store

SPOOL_BYTES = 1024 * 1024
"""A part stays in memory up to this size, then rolls over to a file in ``tmp_dir``."""

COPY_BYTES = 1024 * 1024

API_MODES = (Mode.SELECTOR, Mode.DUPLICATOR)
"""Modes a client may ask for; the replay's baselines are not offered over HTTP."""

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


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_images: int
    max_batch_bytes: int
    max_image_bytes: int

    @classmethod
    def from_settings(cls, api: ApiSettings) -> IngestLimits:
        return cls(api.max_batch_images, api.max_batch_bytes, api.max_image_bytes)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """What the client asked for besides the images (form fields or query parameters)."""

    mode: Mode
    pinned_runtime: str | None = None
    skip_invalid: bool = False
    idempotency_key: str | None = None


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


# multipart/form-data, streamed ---------------------------------------------------------


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    file: tempfile.SpooledTemporaryFile[bytes] | None = None
    size: int = 0


class MultipartStream:
    """Feeds ``python-multipart``'s push parser and hands out finished parts.

    Form fields are kept (they are small and bounded); file parts are spooled and
    returned by :meth:`feed` as soon as they end, so the caller can validate and drop
    them before the next one arrives.
    """

    MAX_FIELD_BYTES = 64 * 1024

    def __init__(self, content_type: str, spool: Callable[[], Any]) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data":
            raise InvalidField(
                f"Content-Type must be multipart/form-data, not {content_type!r}",
                field="Content-Type",
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidField("multipart/form-data without a boundary", field="Content-Type")
        charset = params.get(b"charset", b"utf-8").decode("latin-1")
        try:
            self._charset = codecs.lookup(charset).name
        except LookupError:
            self._charset = "latin-1"
        self._parse_options = parse_options_header
        self._spool = spool
        self._part = _Part()
        self._hname = b""
        self._hvalue = b""
        self.fields: dict[str, str] = {}
        self._done: list[_Part] = []
        self._open: list[Any] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )

    def _decode(self, raw: bytes) -> str:
        return raw.decode(self._charset, errors="replace")

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._hname.lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = self._parse_options(self._part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise InvalidField(
                "a multipart part has no name in its Content-Disposition",
                field="Content-Disposition",
            )
        self._part.name = self._decode(options[b"name"])
        if b"filename" in options:
            self._part.filename = self._decode(options[b"filename"])
            self._part.file = self._spool()
            self._open.append(self._part.file)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            part.file.write(data[start:end])
            part.size += end - start
        else:
            part.data.extend(data[start:end])
            if len(part.data) > self.MAX_FIELD_BYTES:
                raise InvalidField(f"form field {part.name!r} is too long", field=part.name)

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is None:
            self.fields[part.name] = self._decode(bytes(part.data))
        else:
            self._done.append(part)

    def feed(self, chunk: bytes) -> list[_Part]:
        """Parse a chunk; return the file parts it completed (caller closes them)."""
        from python_multipart.exceptions import FormParserError

        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidField(f"malformed multipart body: {exc}", field="body") from None
        done, self._done = self._done, []
        for part in done:
            self._open.remove(part.file)
        return done

    def finish(self) -> None:
        self._parser.finalize()
        if self._open:
            raise InvalidField("the multipart body ended in the middle of a file", field="body")

    def close(self) -> None:
        for f in self._open:
            f.close()
        self._open.clear()
        for part in self._done:
            if part.file is not None:
                part.file.close()
        self._done.clear()


# The whole request ---------------------------------------------------------------------


def parse_bool(value: str, field_name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise InvalidField(f"{field_name}: expected true or false, got {value!r}", field=field_name)


def parse_options(
    values: Mapping[str, str],
    *,
    runtimes: Mapping[str, Any] | set[str] | list[str],
    default_mode: Mode,
    idempotency_key: str | None,
) -> IngestOptions:
    """Validate ``mode``, ``runtime`` and ``skip_invalid`` (422 naming the field)."""
    known = {"mode", "runtime", "skip_invalid"}
    for key in values:
        if key not in known:
            raise InvalidField(f"unknown field {key!r}; expected one of {sorted(known)}", field=key)
    mode = default_mode
    if "mode" in values and values["mode"] != "":
        try:
            mode = Mode(values["mode"])
        except ValueError:
            mode = Mode.PINNED  # sentinel: not offered, rejected below
        if mode not in API_MODES:
            raise InvalidField(
                f"mode: unknown mode {values['mode']!r}; expected one of "
                + ", ".join(m.value for m in API_MODES),
                field="mode",
            )
    pinned = values.get("runtime") or None
    if pinned is not None and pinned not in runtimes:
        raise InvalidField(
            f"runtime: unknown runtime {pinned!r}; configured: {sorted(runtimes)}",
            field="runtime",
        )
    skip = parse_bool(values.get("skip_invalid", ""), "skip_invalid")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise InvalidField("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
    return IngestOptions(mode, pinned, skip, idempotency_key)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of one ingest: the stored batch (``batch.is_new`` False for a repeated
    idempotency key) and what was skipped."""

    batch: BatchRecord
    skipped: tuple[dict[str, Any], ...]


class Ingestor:
    """Turns one upload into a package object and a queued batch row, or into nothing."""

    def __init__(
        self,
        *,
        store: Store,
        objects: ObjectStore,
        tmp_dir: Path,
        limits: IngestLimits,
        runtimes: list[str],
        default_mode: Mode,
        app: str,
        app_version: str,
        clock: Clock,
        on_accepted: Callable[[BatchRecord], None] | None = None,
        on_rejected: Callable[[IngestError], None] | None = None,
    ) -> None:
        self.store, self.objects, self.tmp_dir, self.limits = store, objects, tmp_dir, limits
        self.runtimes, self.default_mode = runtimes, default_mode
        self.app, self.app_version, self.clock = app, app_version, clock
        self.on_accepted, self.on_rejected = on_accepted, on_rejected

    def clean_tmp(self) -> int:
        """Remove temporary files a crash left in ``tmp_dir``; return how many."""
        n = 0
        if self.tmp_dir.is_dir():
            for p in self.tmp_dir.glob(f"{TMP_PREFIX}*"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                n += 1
        return n

    def body_limit(self) -> int:
        """Raw request bytes allowed: the batch limit plus multipart/archive overhead."""
        return self.limits.max_batch_bytes + 4096 * self.limits.max_images + COPY_BYTES

    async def ingest(
        self,
        *,
        content_type: str,
        content_length: int | None,
        body: AsyncIterator[bytes],
        query: Mapping[str, str],
        idempotency_key: str | None,
    ) -> Accepted:
        try:
            return await self._ingest(content_type, content_length, body, query, idempotency_key)
        except IngestError as exc:
            if self.on_rejected is not None:
                self.on_rejected(exc)
            raise

    async def _ingest(
        self,
        content_type: str,
        content_length: int | None,
        body: AsyncIterator[bytes],
        query: Mapping[str, str],
        idempotency_key: str | None,
    ) -> Accepted:
        # Options given as query parameters are checked before any byte is read.
        parse_options(
            query,
            runtimes=self.runtimes,
            default_mode=self.default_mode,
            idempotency_key=idempotency_key,
        )
        if idempotency_key:
            existing = await asyncio.to_thread(self.store.find_by_idempotency_key, idempotency_key)
            if existing is not None:
                return Accepted(existing, existing.skipped)
        limit = self.body_limit()
        if content_length is not None and content_length > limit:
            raise BatchTooLarge(
                f"request body of {content_length} bytes is over the limit of {limit} "
                "(api.max_batch_bytes plus overhead)"
            )
        builder = await asyncio.to_thread(PackageBuilder, self.tmp_dir, self.limits)
        stream: MultipartStream | None = None
        key: str | None = None
        try:
            stream = MultipartStream(content_type, builder.spool)
            received = 0
            async for chunk in body:
                received += len(chunk)
                if received > limit:
                    raise BatchTooLarge(f"request body is over the limit of {limit} bytes")
                for part in stream.feed(chunk):
                    assert part.file is not None
                    try:
                        await asyncio.to_thread(
                            builder.add_upload,
                            part.filename or part.name,
                            part.file,  # type: ignore[arg-type]
                            part.size,
                        )
                    finally:
                        part.file.close()
            stream.finish()
            options = parse_options(
                {**query, **stream.fields},
                runtimes=self.runtimes,
                default_mode=self.default_mode,
                idempotency_key=idempotency_key,
            )
            builder.check(options.skip_invalid)
            n_bytes = await asyncio.to_thread(builder.close)
            batch_id = str(uuid.uuid4())
            key = package_key(batch_id)
            await asyncio.to_thread(self._upload, builder.path, key)
            skipped = tuple(builder.stats.skipped)
            record = await asyncio.to_thread(
                self.store.create_batch,
                created_at=self.clock.now(),
                n_images=builder.n_images,
                n_bytes=n_bytes,
                package_key=key,
                app=self.app,
                app_version=self.app_version,
                mode=options.mode,
                pinned_runtime=options.pinned_runtime,
                idempotency_key=options.idempotency_key,
                skipped=skipped,
                batch_id=batch_id,
            )
            if not record.is_new:
                # Another request with the same key won the race; ours is redundant.
                await asyncio.to_thread(self.objects.delete, key)
            elif self.on_accepted is not None:
                self.on_accepted(record)
            key = None
            return Accepted(record, record.skipped)
        finally:
            if stream is not None:
                stream.close()
            await asyncio.to_thread(builder.discard)
            if key is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.objects.delete, key)

    def _upload(self, path: Path, key: str) -> None:
        with path.open("rb") as f:
            self.objects.put_stream(key, f)
