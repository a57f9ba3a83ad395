"""One upload, end to end: the :class:`Ingestor` that turns a request into a batch.

It ties the pieces together: options given as query parameters are checked before any
byte is read; the body is fed through :class:`~stoic.ingest.multipart.MultipartStream`;
each finished file part goes to :class:`~stoic.ingest.builder.PackageBuilder` in the
ingest's own bounded thread pool (``api.validation_workers`` threads), so validation
never queues the database calls and health checks behind it on asyncio's default pool;
at the end the tar is streamed to the object store with ``put_stream``, the images'
metadata (EXIF, deployment: :mod:`stoic.ingest.metadata`) is stored beside it, and the
batch row is inserted; only then does the API answer ``202``.

Any failure removes the temporary files and the partial object and inserts no row: a
rejected upload leaves nothing behind. A disk that is full, or would be left with less
than ``objectstore.min_free_bytes`` (:class:`~stoic.storage.disk.DiskWatch`), gives a
``507`` naming the disk (:class:`~stoic.errors.InsufficientStorage`), not a ``500``.
When the request task is cancelled, or the caller sets ``cancelled`` (the client left),
the thread stops at its next read and is waited for before the files are removed.

``Idempotency-Key``: a batch is stored with a digest of its request (the options and
each file's name, size and SHA-256, in order; not the multipart boundary). A repeated
key with the same request returns the stored batch (200); with a different one it is
an :class:`~stoic.errors.IdempotencyConflict` (409), as payment APIs answer, rather than
the old batch, which would silently drop the new one. The repeated request's body is
read and digested, but not validated or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stoic.clock import Clock
from stoic.errors import (
    BatchTooLarge,
    IdempotencyConflict,
    IngestError,
    InsufficientStorage,
    StoicError,
    StorageFull,
    StoreError,
)
from stoic.ingest.builder import COPY_BYTES, TMP_PREFIX, PackageBuilder
from stoic.ingest.metadata import metadata_document
from stoic.ingest.multipart import MultipartStream
from stoic.ingest.options import (
    OPTION_FIELDS,
    IngestLimits,
    IngestOptions,
    parse_bool,
    parse_options,
)
from stoic.logging import get_logger
from stoic.storage import disk as disk_names
from stoic.storage.disk import DiskWatch
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import metadata_key, package_key, thumbnails_key
from stoic.store.store import BatchRecord, Store
from stoic.values import Mode

T = TypeVar("T")

log = get_logger("stoic.ingest")


def request_digest(options: IngestOptions, files: Sequence[tuple[str, int, str]]) -> str:
    """SHA-256 of what a request asks for: its options and each file's (name, size,
    SHA-256), in order. Independent of the multipart boundary and of header order.
    ``deployment`` counts only when given, so requests without one digest as before
    it existed."""
    canonical: dict[str, Any] = {
        "mode": options.mode.value,
        "runtime": options.pinned_runtime,
        "skip_invalid": options.skip_invalid,
        "files": [list(f) for f in files],
    }
    if options.deployment is not None:
        canonical["deployment"] = options.deployment
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


class _Discard:
    """A spool that keeps nothing (a repeated request is digested, not stored)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass


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
        workers: int = 2,
        disks: DiskWatch | None = None,
    ) -> None:
        self.store, self.objects, self.tmp_dir, self.limits = store, objects, tmp_dir, limits
        self.disks = disks
        self.runtimes, self.default_mode = runtimes, default_mode
        self.app, self.app_version, self.clock = app, app_version, clock
        self.on_accepted, self.on_rejected = on_accepted, on_rejected
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stoic-ingest")

    def close(self) -> None:
        """Stop the validation pool (queued work is dropped; running work finishes)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _work(self, cancelled: threading.Event, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the validation pool. When the request is cancelled meanwhile,
        tell the thread (``cancelled``) and wait for it to stop, so nothing still
        writes to the files the clean-up is about to remove."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled.set()
            with contextlib.suppress(BaseException):
                await future
            raise

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
        cancelled: threading.Event | None = None,
    ) -> Accepted:
        """Turn one request into a stored batch, or raise an :class:`IngestError`.

        ``cancelled``: set it to stop the work (the client left); it is also set when
        this coroutine is cancelled or fails, so no worker thread outlives the request.
        """
        cancelled = cancelled or threading.Event()
        with self._reported(cancelled):
            # Options given as query parameters are checked before any byte is read.
            early = parse_options(
                query,
                runtimes=self.runtimes,
                default_mode=self.default_mode,
                idempotency_key=idempotency_key,
            )
            if idempotency_key:
                existing = await asyncio.to_thread(
                    self.store.find_by_idempotency_key, idempotency_key
                )
                if existing is not None:
                    return await self._repeat(existing, content_type, content_length, body, query)
            limit = self._limit(content_length)
            if self.disks is not None:
                await asyncio.to_thread(self.disks.require_room, content_length)
            builder = await self._work(
                cancelled,
                lambda: PackageBuilder(
                    self.tmp_dir, self.limits, cancelled=cancelled, skip_invalid=early.skip_invalid
                ),
            )

            stream: MultipartStream | None = None
            keys: list[str] = []
            try:
                stream = self._stream(content_type, builder.spool)
                received = 0
                async for chunk in body:
                    received += len(chunk)
                    if received > limit:
                        raise BatchTooLarge(f"request body is over the limit of {limit} bytes")
                    for part in stream.feed(chunk):
                        assert part.file is not None
                        # skip_invalid applies to the files after it (query or field).
                        skip = {**query, **part.fields_before}.get("skip_invalid", "")
                        builder.skip_invalid = parse_bool(skip, "skip_invalid")
                        try:
                            await self._work(
                                cancelled,
                                builder.add_upload,
                                part.filename or part.name,
                                part.file,
                                part.size,
                            )
                        finally:
                            part.file.close()
                stream.finish()
                options = self._options(query, stream, idempotency_key)
                builder.check(options.skip_invalid)
                digest = request_digest(options, stream.files)
                n_bytes = await self._work(cancelled, builder.close)
                batch_id = str(uuid.uuid4())
                keys = [package_key(batch_id), metadata_key(batch_id), thumbnails_key(batch_id)]
                await self._work(cancelled, self._upload, builder.path, keys[0])
                meta = metadata_document(options.deployment, builder.stats.meta)
                await asyncio.to_thread(self.objects.put_bytes, keys[1], json.dumps(meta).encode())
                await self._work(cancelled, self.objects.put_stream, keys[2], builder.thumbnails)
                skipped = tuple(builder.stats.skipped)
                record = await asyncio.to_thread(
                    self.store.create_batch,
                    created_at=self.clock.now(),
                    n_images=builder.n_images,
                    n_bytes=n_bytes,
                    package_key=keys[0],
                    app=self.app,
                    app_version=self.app_version,
                    mode=options.mode,
                    pinned_runtime=options.pinned_runtime,
                    idempotency_key=options.idempotency_key,
                    skipped=skipped,
                    batch_id=batch_id,
                    request_digest=digest,
                )
                if not record.is_new:
                    # Another request with the same key won the race; ours is redundant,
                    # or, if it asked for something else, a conflict.
                    for key in keys:
                        await asyncio.to_thread(self.objects.delete, key)
                    keys = []
                    _check_same_request(record, digest)
                else:
                    if self.disks is not None:
                        self.disks.written()
                    if self.on_accepted is not None:
                        self.on_accepted(record)
                keys = []
                return Accepted(record, record.skipped)
            finally:
                if stream is not None:
                    stream.close()
                await asyncio.to_thread(builder.discard)
                for key in keys:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.objects.delete, key)

    @contextlib.contextmanager
    def _reported(self, cancelled: threading.Event) -> Iterator[None]:
        """A full disk becomes the 507, a rejection is reported to ``on_rejected``, and
        ``cancelled`` is set however the upload ends (the client left, the task was
        cancelled, it failed or it was stored)."""
        try:
            try:
                yield
            except (OSError, StoicError) as exc:
                full = self._no_space(exc)
                if full is None:
                    raise
                raise full from exc
        except IngestError as exc:
            if self.on_rejected is not None:
                self.on_rejected(exc)
            raise
        finally:
            cancelled.set()

    def _no_space(self, exc: BaseException) -> InsufficientStorage | None:
        """The 507 for a write that found a disk full (the package under ``tmp_dir``,
        the object, the database row), or None for any other failure. The disk is
        noted for ``/readyz``; the log gets its path, the client its name."""
        if isinstance(exc, InsufficientStorage):  # below the floor: nothing was written
            log.warning("upload refused: a disk is below its floor", reason=str(exc))
            return exc
        if isinstance(exc, StorageFull):
            disk, where = disk_names.OBJECTS, exc.root
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            disk, where = disk_names.DATA, str(self.tmp_dir)
        elif isinstance(exc, StoreError) and "database or disk is full" in str(exc):
            disk, where = disk_names.DATABASE, None
        else:
            return None
        if self.disks is not None:
            self.disks.failed(disk)
        log.warning("upload refused: a disk is full", disk=disk, path=where, reason=str(exc))
        return InsufficientStorage(disk, "no space left on device")

    def _limit(self, content_length: int | None) -> int:
        limit = self.body_limit()
        if content_length is not None and content_length > limit:
            raise BatchTooLarge(
                f"request body of {content_length} bytes is over the limit of {limit} "
                "(api.max_batch_bytes plus overhead)"
            )
        return limit

    def _stream(self, content_type: str, spool: Callable[[], Any]) -> MultipartStream:
        return MultipartStream(
            content_type,
            spool,
            known_fields=OPTION_FIELDS,
            max_fields=self.limits.max_form_fields,
            max_field_bytes=self.limits.max_form_bytes,
        )

    def _options(
        self, query: Mapping[str, str], stream: MultipartStream, key: str | None
    ) -> IngestOptions:
        return parse_options(
            {**query, **stream.fields},
            runtimes=self.runtimes,
            default_mode=self.default_mode,
            idempotency_key=key,
        )

    async def _repeat(
        self,
        existing: BatchRecord,
        content_type: str,
        content_length: int | None,
        body: AsyncIterator[bytes],
        query: Mapping[str, str],
    ) -> Accepted:
        """A known Idempotency-Key: digest the body (no validation, nothing stored) and
        answer with the stored batch if it is the same request, 409 if not."""
        limit = self._limit(content_length)
        stream = self._stream(content_type, _Discard)
        try:
            received = 0
            async for chunk in body:
                received += len(chunk)
                if received > limit:
                    raise BatchTooLarge(f"request body is over the limit of {limit} bytes")
                stream.feed(chunk)
            stream.finish()
            options = self._options(query, stream, existing.idempotency_key)
        finally:
            stream.close()
        _check_same_request(existing, request_digest(options, stream.files))
        return Accepted(existing, existing.skipped)

    def _upload(self, path: Path, key: str) -> None:
        with path.open("rb") as f:
            self.objects.put_stream(key, f)


def _check_same_request(record: BatchRecord, digest: str) -> None:
    """Raise :class:`IdempotencyConflict` unless ``record`` was created by a request
    with this digest (batches stored before digests were kept are taken as equal)."""
    if record.request_digest is not None and record.request_digest != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {record.idempotency_key!r} was used for batch {record.id} "
            "with other files or options; use a new key for a new batch",
            field="Idempotency-Key",
        )
