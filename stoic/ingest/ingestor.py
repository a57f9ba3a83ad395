"""One upload, end to end: the :class:`Ingestor` that turns a request into a batch.

It ties the pieces together: options given as query parameters are checked before any
byte is read; the body is fed through :class:`~stoic.ingest.multipart.MultipartStream`;
each finished file part goes to :class:`~stoic.ingest.builder.PackageBuilder` in a
worker thread; at the end the tar is streamed to the object store with ``put_stream``
and the batch row is inserted, and only then does the API answer ``202``.

Any failure removes the temporary files and the partial object and inserts no row: a
rejected upload leaves nothing behind. An ``Idempotency-Key`` seen before returns the
stored batch instead of a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stoic.clock import Clock
from stoic.errors import BatchTooLarge, IngestError
from stoic.ingest.builder import COPY_BYTES, TMP_PREFIX, PackageBuilder
from stoic.ingest.multipart import MultipartStream
from stoic.ingest.options import IngestLimits, parse_options
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import package_key
from stoic.store.store import BatchRecord, Store
from stoic.values import Mode


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
