"""One contract, two object stores: a directory and a real S3 server (SeaweedFS).

The S3 store runs on the session's SeaweedFS server (``s3_server`` in conftest.py,
:mod:`tests.support.s3`); it skips only when the binary is absent.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoic.errors import InputError, InvalidObjectKey, ObjectNotFound
from stoic.settings import Settings
from stoic.storage.objectstore import (
    DirObjectStore,
    ObjectStore,
    Usage,
    iter_object,
    make_object_store,
)
from tests.support.s3 import S3Server


@pytest.fixture(scope="session")
def s3_settings(s3_server: S3Server) -> Settings:
    return Settings(objectstore=s3_server.objectstore())


@pytest.fixture(params=["dir", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "dir":
        yield make_object_store(Settings(data_dir=tmp_path))
        return
    settings = request.getfixturevalue("s3_settings")
    s3 = make_object_store(settings)
    s3.delete_prefix("")  # each test starts from an empty bucket
    yield s3


class _Chunks(io.RawIOBase):
    """A non-seekable stream that produces ``total`` bytes without holding them."""

    def __init__(self, total: int) -> None:
        self.left, self.total = total, total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        pos = self.total - self.left
        pattern = bytes((pos + i) % 251 for i in range(min(n, 251)))
        reps = pattern * (n // max(len(pattern), 1) + 1)
        buffer[:n] = reps[:n]
        self.left -= n
        return n


def test_roundtrip_bytes(store: ObjectStore) -> None:
    store.put_bytes("batches/b1/package.tar", b"hello")
    assert store.get_bytes("batches/b1/package.tar") == b"hello"
    assert store.exists("batches/b1/package.tar")
    assert store.size("batches/b1/package.tar") == 5
    store.put_bytes("batches/b1/package.tar", b"replaced")
    assert store.get_bytes("batches/b1/package.tar") == b"replaced"
    with store.open_read("batches/b1/package.tar") as f:
        assert f.read(3) == b"rep"
        assert f.read() == b"laced"
    assert b"".join(iter_object(store, "batches/b1/package.tar", 3)) == b"replaced"


def test_missing_key_is_typed_and_named(store: ObjectStore) -> None:
    for call in (store.get_bytes, store.open_read, store.size):
        with pytest.raises(ObjectNotFound) as info:
            call("batches/nope/package.tar")
        assert info.value.key == "batches/nope/package.tar"
        assert "batches/nope/package.tar" in str(info.value)
    assert not store.exists("batches/nope/package.tar")
    store.delete("batches/nope/package.tar")  # deleting a missing key is a no-op


def test_list_delete_and_prefix(store: ObjectStore) -> None:
    for key in ("batches/1/package.tar", "batches/1/results.json", "batches/12/package.tar"):
        store.put_bytes(key, key.encode())
    store.put_bytes("models/app/1/model.keras", b"m")
    assert store.list("batches/1/") == ["batches/1/package.tar", "batches/1/results.json"]
    # Plain string prefixes, as in S3: "batches/1" matches "batches/12/..." too.
    assert store.list("batches/1") == [
        "batches/1/package.tar",
        "batches/1/results.json",
        "batches/12/package.tar",
    ]
    assert len(store.list()) == 4
    assert store.delete_prefix("batches/1/") == 2
    assert store.list("batches/") == ["batches/12/package.tar"]
    store.delete("batches/12/package.tar")
    assert store.list("batches/") == []
    assert store.list("nothing/here/") == []


def test_usage_counts_every_object_and_byte(store: ObjectStore) -> None:
    """The disk usage metrics' figure: a walk of the directory, a listing of the bucket."""
    assert store.usage() == Usage(0, 0)
    store.put_bytes("batches/1/package.tar", b"x" * 1000)
    store.put_bytes("models/app/1/model.keras", b"y" * 24)
    assert store.usage() == Usage(2, 1024)
    store.delete("batches/1/package.tar")
    assert store.usage() == Usage(1, 24)


def test_large_stream_is_multipart_and_exact(store: ObjectStore) -> None:
    size = 20 * 1024 * 1024 + 12345  # over the 8 MiB multipart threshold: 3 parts on S3
    n = store.put_stream("batches/big/package.tar", _Chunks(size))  # type: ignore[arg-type]
    assert n == size
    assert store.size("batches/big/package.tar") == size
    expected = _Chunks(size)
    got_total = 0
    with store.open_read("batches/big/package.tar") as f:
        while chunk := f.read(3 * 1024 * 1024 + 7):
            want = expected.read(len(chunk))
            assert chunk == want
            got_total += len(chunk)
    assert got_total == size


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "a/../b", "../x", "a//b", "./a", "a/./b", "a\\b", "C:/x", "a/"]
)
def test_bad_keys_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidObjectKey) as info:
        store.put_bytes(key, b"x")
    assert isinstance(info.value, InputError)
    with pytest.raises(InvalidObjectKey):
        store.get_bytes(key)


def test_dir_store_is_atomic_and_stays_in_root(tmp_path: Path) -> None:
    store = DirObjectStore(tmp_path / "objects")

    class Boom(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            raise OSError("network went away")

    store.put_bytes("a/b", b"old")
    with pytest.raises(OSError, match="network went away"):
        store.put_stream("a/b", Boom())  # type: ignore[arg-type]
    assert store.get_bytes("a/b") == b"old"  # the failed write left no trace
    assert [p.name for p in (tmp_path / "objects" / "a").iterdir()] == ["b"]
    store.delete("a/b")
    assert not (tmp_path / "objects" / "a").exists()  # empty directories pruned
    assert list(tmp_path.iterdir()) == [tmp_path / "objects"]
