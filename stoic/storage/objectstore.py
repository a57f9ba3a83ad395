"""Where batch packages, results and models live: a directory (default) or S3.

The edge controller, the REST ingest and every serverless function exchange data only
through keys in an object store (``batches/<id>/package.tar``, ``models/<app>/<v>/
model.keras``; see :mod:`stoic.storage.package`). One narrow protocol, :class:`ObjectStore`,
hides whether that is a local directory (the edge, tests) or an S3 bucket (the cloud).

Why these choices:

* **Streaming first.** Packages can be several GB, so :meth:`ObjectStore.put_stream`
  copies in fixed-size chunks (directory) or uses boto3's ``upload_fileobj``, which
  splits the stream into multipart parts; neither holds the whole object in memory.
  :meth:`ObjectStore.open_read` returns a buffered binary stream for the same reason.
* **Atomic writes.** The directory store writes to a hidden temporary file beside the
  target and renames it, so a reader never sees half an object; S3 is atomic per PUT.
* **Validated keys.** A key is a relative ``/``-separated path with no empty, ``.`` or
  ``..`` segment. The same rule applies to both stores so that a key valid in tests is
  valid in production, and no key can escape the directory store's root. Violations
  raise :class:`~stoic.errors.InvalidObjectKey` (also an ``InputError``).
* **A full disk is typed too.** A write that finds no space (``ENOSPC``, ``EDQUOT``)
  raises :class:`~stoic.errors.StorageFull` naming the root, and leaves neither its
  temporary file nor the directories it made for the object (an empty
  ``batches/<id>/`` per refused upload would pile up).
* **Typed misses.** A missing key raises :class:`~stoic.errors.ObjectNotFound` naming
  the key and the store, in both implementations. ``delete`` of a missing key is a
  no-op in both (S3 semantics; cleanup code can call it blindly).
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from stoic.errors import (
    ConfigError,
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStoreError,
    StorageFull,
)
from stoic.extras import require

if TYPE_CHECKING:
    from stoic.settings import Settings

CHUNK_BYTES = 1024 * 1024
"""Copy/stream granularity: large enough to be fast, small enough to never matter."""

MULTIPART_BYTES = 8 * 1024 * 1024
"""S3 multipart threshold and part size (S3's minimum part is 5 MiB)."""

_TMP_PREFIX = ".tmp-"

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A write that failed for want of space (a full disk, or over a quota)."""


@runtime_checkable
class ObjectStore(Protocol):
    """Keyed bytes. Keys are relative ``/``-separated paths (see :func:`validate_key`)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""
        ...

    def put_stream(self, key: str, fileobj: BinaryIO) -> int:
        """Copy ``fileobj`` (read until EOF) to ``key`` in chunks; return bytes stored."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object; raises ObjectNotFound."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A binary stream of the object (close it, or use ``with``); ObjectNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is absent."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix``; return how many."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix`` (plain string prefix, as in S3), sorted."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes; raises ObjectNotFound."""
        ...

    def usage(self) -> Usage:
        """Objects and bytes in the whole store (a walk, or a listing: not cheap)."""
        ...


@dataclass(frozen=True, slots=True)
class Usage:
    """What a store or a directory holds: regular files (objects) and their bytes."""

    objects: int
    bytes: int


def walk_usage(root: Path) -> Usage:
    """Files and bytes under ``root`` (links not followed; 0 if it does not exist). A
    file removed during the walk is skipped: the figure is a snapshot, not a lock."""
    objects = n_bytes = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            objects += 1
            n_bytes += st.st_size
    return Usage(objects, n_bytes)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise InvalidObjectKey."""
    if not isinstance(key, str) or not key:
        raise InvalidObjectKey(str(key), "empty key")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise InvalidObjectKey(key, "absolute paths are not allowed")
    if "\\" in key or "\x00" in key:
        raise InvalidObjectKey(key, "backslashes and NUL bytes are not allowed")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidObjectKey(key, f"segment {part!r} is not allowed (no '', '.', '..')")
        if part.startswith(_TMP_PREFIX):
            raise InvalidObjectKey(key, f"segments starting with {_TMP_PREFIX!r} are reserved")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is ``""`` or a key, optionally ending in ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def iter_object(store: ObjectStore, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the object in chunks (e.g. for a streaming HTTP response)."""
    with store.open_read(key) as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


# Directory store ----------------------------------------------------------------------


class DirObjectStore:
    """Objects as files under ``root`` (created on demand)."""

    def __init__(self, root: Path | str) -> None:
        self.given = Path(root)  # as configured, for messages (/proc/self, not /proc/42)
        self.root = self.given.resolve()

    def __repr__(self) -> str:
        return f"DirObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(key, str(self.root))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data))

    def put_stream(self, key: str, fileobj: BinaryIO) -> int:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "wb") as out:
                n = self._copy(fileobj, out)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users' pods read objects
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._prune(path.parent)  # the directories made for this object alone
            if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                raise StorageFull(str(self.root), key, exc.strerror or str(exc)) from exc
            raise
        return n

    def _copy(self, src: BinaryIO, out: BinaryIO) -> int:
        """Copy ``src`` to the open temporary file ``out`` in chunks; bytes copied."""
        n = 0
        while chunk := src.read(CHUNK_BYTES):
            out.write(chunk)
            n += len(chunk)
        return n

    def check_writable(self) -> None:
        """Create the root and write and remove a file in it, or raise
        :class:`~stoic.errors.ConfigError` naming ``objectstore.path`` (start-up: a
        root such as ``/proc/self`` is refused before the first upload finds out)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.root)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise ConfigError(
                f"objectstore.path {self.given}: cannot write there ({exc.strerror or exc})"
            ) from None

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest directory that every matching key must lie under.
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise self._missing(key)
        return path.stat().st_size

    def usage(self) -> Usage:
        return walk_usage(self.root)


# S3 store -----------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """Passes reads through and counts the bytes (upload_fileobj returns nothing).

    Deliberately not seekable, so boto3 streams it part by part instead of trying to
    seek around in a socket or pipe.
    """

    def __init__(self, inner: BinaryIO) -> None:
        self._inner, self.count = inner, 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        with self._lock:
            self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _BodyReader(io.RawIOBase):
    """Adapts botocore's StreamingBody to a raw stream for io.BufferedReader."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


class S3ObjectStore:
    """Objects in one S3 bucket (any S3-compatible server: AWS, SeaweedFS, MinIO)."""

    def __init__(self, client: Any, bucket: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client, self.bucket = client, bucket
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        require("s3", "objectstore.kind = 's3'")
        s3 = settings.objectstore
        secret = s3.s3_secret_key.get_secret_value() if s3.s3_secret_key else None
        return cls.connect(s3.s3_endpoint, s3.s3_region, s3.s3_bucket, s3.s3_access_key, secret)

    @classmethod
    def connect(
        cls,
        endpoint: str | None,
        region: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
    ) -> S3ObjectStore:
        """A store on ``bucket`` at ``endpoint`` (None: AWS); no keys = boto3's own
        search (environment, instance role). Touches no network."""
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )
        return cls(client, bucket)

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r})"

    def _where(self) -> str:
        return f"s3://{self.bucket}"

    def _error(self, key: str, exc: Exception) -> ObjectStoreError:
        if _is_missing(exc):
            return ObjectNotFound(key, self._where())
        return ObjectStoreError(f"{self._where()}/{key}: {exc}")

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (call once at start-up)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                raise ObjectStoreError(f"cannot create bucket {self.bucket!r}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc

    def put_stream(self, key: str, fileobj: BinaryIO) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        reader = _CountingReader(fileobj)
        try:
            self.client.upload_fileobj(
                reader, self.bucket, validate_key(key), Config=self._transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc
        return reader.count

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc
        return io.BufferedReader(_BodyReader(resp["Body"]), buffer_size=CHUNK_BYTES)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise self._error(key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))
        except (ClientError, BotoCoreError) as exc:
            if not _is_missing(exc):
                raise self._error(key, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = keys[start : start + 1000]
            try:
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._error(prefix, exc) from exc
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        validate_prefix(prefix)
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(prefix, exc) from exc
        return sorted(keys)

    def size(self, key: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc
        return int(head["ContentLength"])

    def usage(self) -> Usage:
        """One listing of the bucket (a request per 1,000 objects), sizes summed."""
        from botocore.exceptions import BotoCoreError, ClientError

        objects = n_bytes = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    objects += 1
                    n_bytes += int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error("", exc) from exc
        return Usage(objects, n_bytes)


def make_object_store(settings: Settings) -> ObjectStore:
    """The store the settings describe (``objectstore.kind``: ``dir`` or ``s3``).

    Touches no network: for S3 call :meth:`S3ObjectStore.ensure_bucket` at start-up if
    the bucket may not exist yet.
    """
    if settings.objectstore.kind == "s3":
        return S3ObjectStore.from_settings(settings)
    return DirObjectStore(settings.objects_path)


def objects_name(settings: Settings) -> str:
    """The store the settings describe, as a message names it (a path, ``s3://bucket``)."""
    o = settings.objectstore
    if o.kind == "s3":
        return f"s3://{o.s3_bucket}" + (f" at {o.s3_endpoint}" if o.s3_endpoint else "")
    return str(settings.objects_path.resolve())


def copy_file(src: Path, store: ObjectStore, key: str) -> int:
    """Stream a local file into the store (convenience for CLIs and tests)."""
    with src.open("rb") as f:
        return store.put_stream(key, f)


def download_to(store: ObjectStore, key: str, fileobj: BinaryIO) -> int:
    """Stream an object into an open binary file; return bytes copied."""
    n = 0
    with store.open_read(key) as f:
        while chunk := f.read(CHUNK_BYTES):
            fileobj.write(chunk)
            n += len(chunk)
    return n


__all__ = [
    "CHUNK_BYTES",
    "DirObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "Usage",
    "copy_file",
    "download_to",
    "iter_object",
    "make_object_store",
    "objects_name",
    "validate_key",
    "validate_prefix",
    "walk_usage",
]
