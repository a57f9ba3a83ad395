"""Ingest pieces without HTTP: image checks, safe names, the package builder, the
streaming multipart parser (fed byte by byte, so part boundaries fall anywhere)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import cast

import pytest

from stoic.errors import (
    BatchTooLarge,
    CorruptImage,
    EmptyBatch,
    InvalidField,
    NotAnImage,
    UnsafeArchivePath,
)
from stoic.ingest.builder import (
    PackageBuilder,
    is_archive,
    safe_member_name,
    sniff_format,
    validate_image,
)
from stoic.ingest.multipart import MultipartStream
from stoic.ingest.options import IngestLimits, parse_options
from stoic.storage.package import iter_package
from stoic.values import Mode
from tests.test_api import jpeg, png, tar_of, zip_of

LIMITS = IngestLimits(max_images=5, max_batch_bytes=100_000, max_image_bytes=20_000)


def test_sniff_format() -> None:
    assert sniff_format(jpeg()) == "JPEG"
    assert sniff_format(png()) == "PNG"
    assert sniff_format(b"GIF89a....") == "GIF"
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"
    assert sniff_format(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"") is None


def test_is_archive_by_content_then_name() -> None:
    assert is_archive("x.bin", zip_of({"a.jpg": jpeg()}))
    assert is_archive("x.bin", tar_of({"a.jpg": jpeg()}, mode="w:gz"))
    assert is_archive("x.bin", tar_of({"a.jpg": jpeg()}))
    assert is_archive("images.tar", b"garbage")
    assert not is_archive("a.jpg", jpeg())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", "a.jpg"),
        ("./dir/a.jpg", "dir/a.jpg"),
        ("dir//b.png", "dir/b.png"),
        ("d\\c.jpg", "d/c.jpg"),
    ],
)
def test_safe_member_name_normalises(name: str, expected: str) -> None:
    assert safe_member_name(name) == expected


@pytest.mark.parametrize(
    "name", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:/x.jpg", "", "./", "a\0b"]
)
def test_safe_member_name_refuses(name: str) -> None:
    with pytest.raises(UnsafeArchivePath) as info:
        safe_member_name(name)
    assert info.value.file == name and info.value.status == 400


def check(data: bytes, name: str = "f.jpg") -> str:
    return validate_image(name, io.BytesIO(data), len(data), LIMITS)


def test_validate_image() -> None:
    assert check(jpeg()) == "JPEG"
    assert check(png(), "f.png") == "PNG"
    with pytest.raises(NotAnImage) as e1:
        check(b"%PDF-1.4 not an image", "doc.pdf")
    assert (e1.value.file, e1.value.status) == ("doc.pdf", 415)
    big = jpeg(3, size=(300, 200))
    with pytest.raises(CorruptImage) as e2:
        check(big[: len(big) // 2], "half.jpg")
    assert (e2.value.file, e2.value.status) == ("half.jpg", 422)
    with pytest.raises(CorruptImage):
        check(png()[:40], "cut.png")
    with pytest.raises(BatchTooLarge) as e3:
        check(jpeg() + b"\0" * LIMITS.max_image_bytes, "huge.jpg")
    assert (e3.value.file, e3.value.status) == ("huge.jpg", 413)


def build(
    tmp_path: Path, *uploads: tuple[str, bytes], skip: bool = False
) -> list[tuple[str, bytes]]:
    b = PackageBuilder(tmp_path, LIMITS)
    try:
        for name, data in uploads:
            b.add_upload(name, io.BytesIO(data), len(data))
        b.check(skip)
        b.close()
        with b.path.open("rb") as f:
            return list(iter_package(f))
    finally:
        b.discard()
        assert not b.path.exists()


def test_builder_packages_images_and_archives(tmp_path: Path) -> None:
    a, c = jpeg(1), jpeg(3)
    members = build(
        tmp_path,
        ("a.jpg", a),
        ("more.zip", zip_of({"sub/c.jpg": c, ".DS_Store": b"x", "__MACOSX/._c.jpg": b"y"})),
        ("a.jpg", a),
    )
    assert members == [("a.jpg", a), ("sub/c.jpg", c), ("a-2.jpg", a)]


def test_builder_stops_at_the_first_invalid_image(tmp_path: Path) -> None:
    b = PackageBuilder(tmp_path, LIMITS)
    try:
        b.add_upload("ok.jpg", io.BytesIO(jpeg()), len(jpeg()))
        with pytest.raises(NotAnImage) as info:
            b.add_upload("t.txt", io.BytesIO(b"text"), 4)
        assert info.value.file == "t.txt"
    finally:
        b.discard()


def test_builder_with_skip_invalid_collects_invalid_images_until_check(tmp_path: Path) -> None:
    b = PackageBuilder(tmp_path, LIMITS, skip_invalid=True)
    try:
        for name, data in [
            ("ok.jpg", jpeg()),
            ("t.txt", b"text"),
            ("n.tar.gz", tar_of({"z.jpg": jpeg()}, "w:gz")),
        ]:
            b.add_upload(name, io.BytesIO(data), len(data))
        assert b.n_images == 2
        with pytest.raises(NotAnImage):
            b.check(False)  # the final options said otherwise after all
        b.check(True)
        assert [s["file"] for s in b.stats.skipped] == ["t.txt"]
    finally:
        b.discard()


def test_builder_limits(tmp_path: Path) -> None:
    with pytest.raises(BatchTooLarge):
        build(tmp_path, *((f"{i}.jpg", jpeg(i)) for i in range(LIMITS.max_images + 1)))
    with pytest.raises(EmptyBatch):
        build(tmp_path)
    b = PackageBuilder(tmp_path, LIMITS, skip_invalid=True)
    try:
        b.add_upload("x.txt", io.BytesIO(b"x"), 1)
        with pytest.raises(EmptyBatch) as info:
            b.check(True)
        assert info.value.file == "x.txt"
    finally:
        b.discard()


def test_zip_bomb_member_stops_at_the_limit(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.jpg", b"\xff\xd8\xff" + b"\0" * (10 * LIMITS.max_image_bytes))
    bomb = buf.getvalue()
    assert len(bomb) < LIMITS.max_image_bytes
    with pytest.raises(BatchTooLarge) as info:
        build(tmp_path, ("bomb.zip", bomb))
    assert info.value.file == "bomb.jpg"


def test_corrupt_archives(tmp_path: Path) -> None:
    with pytest.raises(CorruptImage) as e1:
        build(tmp_path, ("x.zip", b"PK\x03\x04 not really a zip"))
    assert e1.value.file == "x.zip"
    with pytest.raises(CorruptImage):
        build(tmp_path, ("x.tar.gz", b"\x1f\x8b garbage"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dev = tarfile.TarInfo("dev.jpg")
        dev.type = tarfile.CHRTYPE
        tar.addfile(dev)
    with pytest.raises(UnsafeArchivePath):
        build(tmp_path, ("x.tar", buf.getvalue()))


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = io.BytesIO()
    for name, filename, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def test_multipart_stream_byte_by_byte() -> None:
    body = multipart(
        [("files", "a.jpg", jpeg(1)), ("mode", None, b"duplicator"), ("files", "b.png", png())]
    )
    spools: list[io.BytesIO] = []

    def spool() -> io.BytesIO:
        spools.append(io.BytesIO())
        return spools[-1]

    stream = MultipartStream("multipart/form-data; boundary=b0und", spool)
    got = []
    for i in range(len(body)):
        for part in stream.feed(body[i : i + 1]):
            assert part.file is not None
            got.append((part.filename, cast(io.BytesIO, part.file).getvalue(), part.size))
    stream.finish()
    stream.close()
    assert got == [("a.jpg", jpeg(1), len(jpeg(1))), ("b.png", png(), len(png()))]
    assert stream.fields == {"mode": "duplicator"}


def test_multipart_stream_errors() -> None:
    with pytest.raises(InvalidField) as e1:
        MultipartStream("application/json", io.BytesIO)
    assert e1.value.field == "Content-Type"
    with pytest.raises(InvalidField):
        MultipartStream("multipart/form-data", io.BytesIO)
    stream = MultipartStream("multipart/form-data; boundary=b0und", io.BytesIO)
    body = multipart([("files", "a.jpg", jpeg(1))])
    stream.feed(body[: len(body) // 2])
    with pytest.raises(InvalidField) as e2:
        stream.finish()
    assert e2.value.field == "body"
    stream.close()


def test_parse_options() -> None:
    rts = ["edge", "gpu1"]
    o = parse_options({}, runtimes=rts, default_mode=Mode.SELECTOR, idempotency_key=None)
    assert (o.mode, o.pinned_runtime, o.skip_invalid) == (Mode.SELECTOR, None, False)
    o = parse_options(
        {"mode": "duplicator", "runtime": "gpu1", "skip_invalid": "yes"},
        runtimes=rts,
        default_mode=Mode.SELECTOR,
        idempotency_key="k",
    )
    assert (o.mode, o.pinned_runtime, o.skip_invalid, o.idempotency_key) == (
        Mode.DUPLICATOR,
        "gpu1",
        True,
        "k",
    )
    for values, field in [
        ({"mode": "pinned"}, "mode"),
        ({"runtime": "x"}, "runtime"),
        ({"skip_invalid": "maybe"}, "skip_invalid"),
        ({"colour": "red"}, "colour"),
    ]:
        with pytest.raises(InvalidField) as info:
            parse_options(values, runtimes=rts, default_mode=Mode.SELECTOR, idempotency_key=None)
        assert info.value.field == field
    with pytest.raises(InvalidField) as info:
        parse_options({}, runtimes=rts, default_mode=Mode.SELECTOR, idempotency_key="k" * 256)
    assert info.value.field == "Idempotency-Key"
