"""The batch package: streaming tar write/read, unsafe members rejected, key helpers."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stoic.errors import InputError
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import (
    PackageWriter,
    batch_prefix,
    iter_package,
    model_key,
    package_key,
    results_key,
    write_package,
)


class _WriteOnly(io.RawIOBase):
    """A pipe-like sink: no seek, no tell, so the writer must really stream."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.chunks.append(bytes(b))
        return len(b)


def test_roundtrip_through_a_non_seekable_stream(tmp_path: Path) -> None:
    sink = _WriteOnly()
    images = [(f"img{i:03d}.jpg", bytes([i]) * (100 + i)) for i in range(5)]
    with PackageWriter(sink) as writer:  # type: ignore[arg-type]
        for name, data in images[:4]:
            writer.add_bytes(name, data)
        path = tmp_path / "img004.jpg"
        path.write_bytes(images[4][1])
        writer.add_file(path)
        assert writer.n_images == 5
    data = b"".join(sink.chunks)
    assert list(iter_package(io.BytesIO(data))) == images
    # Uncompressed tar: members are readable by any tar tool.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [n for n, _ in images]


def test_package_file_in_object_store(tmp_path: Path) -> None:
    pkg = tmp_path / "package.tar"
    with PackageWriter.open(pkg) as writer:
        writer.add_bytes("a.png", b"png-bytes")
    store = DirObjectStore(tmp_path / "objects")
    with pkg.open("rb") as f:
        store.put_stream(package_key("b-1"), f)
    with store.open_read(package_key("b-1")) as f:
        assert list(iter_package(f)) == [("a.png", b"png-bytes")]


def _raw_tar(name: str, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


@pytest.mark.parametrize("name", ["/etc/passwd", "../evil.jpg", "a/../../evil.jpg"])
def test_unsafe_member_names_rejected(name: str) -> None:
    with pytest.raises(InputError, match="package member"):
        list(iter_package(io.BytesIO(_raw_tar(name))))


def test_non_regular_members_rejected() -> None:
    with pytest.raises(InputError, match="not a regular file"):
        list(iter_package(io.BytesIO(_raw_tar("link.jpg", tarfile.SYMTYPE))))


def test_writer_rejects_unsafe_and_duplicate_names() -> None:
    with PackageWriter(io.BytesIO()) as writer:
        with pytest.raises(InputError):
            writer.add_bytes("../x.jpg", b"x")
        writer.add_bytes("x.jpg", b"x")
        with pytest.raises(InputError, match="duplicate"):
            writer.add_bytes("x.jpg", b"y")


def test_not_a_tar() -> None:
    with pytest.raises(InputError, match="tar"):
        list(iter_package(io.BytesIO(b"this is not a tar archive at all" * 40)))


def test_empty_package_and_write_package() -> None:
    buf = io.BytesIO()
    assert write_package(buf, iter([])) == 0
    assert list(iter_package(io.BytesIO(buf.getvalue()))) == []


def test_keys() -> None:
    assert package_key("b1") == "batches/b1/package.tar"
    assert results_key("b1") == "batches/b1/results.json"
    assert batch_prefix("b1") == "batches/b1/"
    assert model_key("classify", "2") == "models/classify/2/model.keras"
    for bad in ("", "../x", "a/b", "..", "-x"):
        with pytest.raises(InputError):
            package_key(bad)


def test_one_name_limit_for_model_push_and_the_default_version_api() -> None:
    """``stoic model push`` (model_key) and ``PUT /v1/models/default`` accept the same
    longest version, the store's name column's 64 characters, and refuse one more."""
    from pydantic import ValidationError

    from stoic.api.schemas import DefaultModelIn
    from stoic.storage.package import MAX_NAME_CHARS

    assert MAX_NAME_CHARS == 64
    longest, over = "v" * MAX_NAME_CHARS, "v" * (MAX_NAME_CHARS + 1)
    assert model_key("classify", longest).endswith(f"/{longest}/model.keras")
    assert DefaultModelIn(version=longest).version == longest
    with pytest.raises(InputError, match="1-64 characters"):
        model_key("classify", over)
    with pytest.raises(ValidationError):
        DefaultModelIn(version=over)
