"""Ingest pieces without HTTP: image checks, safe names, the package builder, the
streaming multipart parser (fed byte by byte, so part boundaries fall anywhere)."""

from __future__ import annotations

import dataclasses
import io
import struct
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any, cast

import pytest

from stoic.errors import (
    BatchTooLarge,
    CorruptImage,
    EmptyBatch,
    InvalidField,
    NotAnImage,
    RequestAborted,
    TooManyInvalid,
    UnsafeArchivePath,
)
from stoic.ingest import builder as builder_module
from stoic.ingest.builder import (
    PackageBuilder,
    is_archive,
    read_budget,
    safe_member_name,
    sniff_format,
    validate_image,
)
from stoic.ingest.ingestor import request_digest
from stoic.ingest.multipart import MAX_PART_HEADER_BYTES, MultipartStream
from stoic.ingest.options import OPTION_FIELDS, IngestLimits, parse_options
from stoic.storage.package import iter_package
from stoic.values import Mode
from tests.support.images import jpeg, png, tar_of, with_png_size, zip_of

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
    return validate_image(name, io.BytesIO(data), len(data), LIMITS).format


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


# Bounded work (issue 13): pixels from the header, bytes of rejected files, reads, a cap
# on invalid images, cancellation, archive entries, form fields -------------------------


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


class CountingIO(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, n: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(n)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("huge.png", with_png_size(png(), 12_000, 12_000)),
        ("huge.jpg", with_jpeg_size(jpeg(), 12_000, 12_000)),
    ],
)
def test_the_pixel_limit_is_checked_from_the_header_before_decoding(name: str, data: bytes) -> None:
    f = CountingIO(data)
    with pytest.raises(BatchTooLarge) as info:
        validate_image(name, f, len(data), LIMITS)
    assert (info.value.file, info.value.status) == (name, 413)
    assert "12000 × 12000 = 144000000 pixels" in str(info.value)
    assert "api.max_image_pixels" in str(info.value)
    assert f.reads < 50  # the header only: nothing was decoded


def test_the_batch_pixel_budget_counts_every_image(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_batch_pixels=int(2.5 * 64 * 48))
    b = PackageBuilder(tmp_path, limits)
    try:
        for i in range(2):
            b.add_upload(f"{i}.jpg", io.BytesIO(jpeg(i)), len(jpeg(i)))
        with pytest.raises(BatchTooLarge, match=r"api\.max_batch_pixels"):
            b.add_upload("2.jpg", io.BytesIO(jpeg(2)), len(jpeg(2)))
    finally:
        b.discard()


def test_rejected_files_count_toward_the_byte_budget(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_batch_bytes=50_000, max_invalid=100)
    junk = zip_of({f"{i}.jpg": b"\xff\xd8\xff" + b"\0" * 15_000 for i in range(5)})
    b = PackageBuilder(tmp_path, limits, skip_invalid=True)
    try:
        with pytest.raises(BatchTooLarge, match="rejected files count too"):
            b.add_upload("junk.zip", io.BytesIO(junk), len(junk))
        assert len(b.stats.skipped) == 3  # the fourth went over before its validation
    finally:
        b.discard()


def test_junk_between_jpeg_markers_is_refused_within_the_read_budget() -> None:
    """Pillow skips junk between markers one read(1) at a time: a JPEG header and
    then megabytes of zeros once cost seconds of CPU per image."""
    real = jpeg(1, size=(400, 300))
    junk = real[: real.index(b"\xff\xda")] + b"\0" * (4 * 1024 * 1024)
    f = CountingIO(junk)
    with pytest.raises(CorruptImage) as info:
        validate_image("junk.jpg", f, len(junk), dataclasses.replace(LIMITS, max_image_bytes=10**8))
    assert "junk where its structure should be" in str(info.value)
    assert f.reads <= read_budget(len(junk)) + 2
    assert read_budget(len(junk)) < len(junk) // 100
    # A real image is far inside its budget.
    f = CountingIO(real)
    assert validate_image(
        "real.jpg", f, len(real), dataclasses.replace(LIMITS, max_image_bytes=10**8)
    )
    assert f.reads < 200


def test_the_first_invalid_image_stops_an_archive(tmp_path: Path) -> None:
    members = {"bad.jpg": b"\xff\xd8\xff" + b"\0" * 100, **{f"{i}.jpg": jpeg(i) for i in range(4)}}
    b = PackageBuilder(tmp_path, LIMITS)
    try:
        data = zip_of(members)
        with pytest.raises(CorruptImage) as info:
            b.add_upload("x.zip", io.BytesIO(data), len(data))
        assert info.value.file == "bad.jpg"
        assert b.stats.entries == 1  # nothing after it was read
    finally:
        b.discard()


def test_skip_invalid_skips_at_most_max_invalid(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_invalid=2)
    b = PackageBuilder(tmp_path, limits, skip_invalid=True)
    try:
        for i in range(2):
            b.add_upload(f"{i}.txt", io.BytesIO(b"text"), 4)
        with pytest.raises(TooManyInvalid) as info:
            b.add_upload("2.txt", io.BytesIO(b"text"), 4)
        assert (info.value.status, info.value.code, info.value.file) == (
            422,
            "too_many_invalid",
            "2.txt",
        )
        assert "api.max_invalid_images" in str(info.value) and "0.txt" in str(info.value)
    finally:
        b.discard()


def test_a_cancelled_upload_stops_at_the_next_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled = threading.Event()
    calls = []
    original = builder_module.validate_image

    def leave_during_the_first(*args: Any, **kwargs: Any) -> str:
        calls.append(args[0])
        cancelled.set()  # the client leaves while this image is validated
        return original(*args, **kwargs)

    monkeypatch.setattr(builder_module, "validate_image", leave_during_the_first)
    data = zip_of({f"{i}.jpg": jpeg(i) for i in range(5)})
    b = PackageBuilder(tmp_path, LIMITS, cancelled=cancelled)
    try:
        with pytest.raises(RequestAborted):
            b.add_upload("x.zip", io.BytesIO(data), len(data))
        assert calls == ["0.jpg"] and b.n_images == 0
    finally:
        b.discard()


def test_archive_entries_are_capped_before_the_archive_is_parsed(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(LIMITS.max_entries + 1):
            zf.writestr(f".hidden-{i}", b"")  # ignored entries still cost a walk
    data = buf.getvalue()
    b = PackageBuilder(tmp_path, LIMITS)
    try:
        with pytest.raises(BatchTooLarge, match="archive entries") as info:
            b.add_upload("many.zip", io.BytesIO(data), len(data))
        assert info.value.file == "many.zip"
        assert b.stats.entries == 0
        tarred = tar_of({f"d/.hidden-{i}": b"" for i in range(LIMITS.max_entries + 1)})
        with pytest.raises(BatchTooLarge, match="entries"):
            b.add_upload("many.tar", io.BytesIO(tarred), len(tarred))
    finally:
        b.discard()


def test_pillow_messages_carry_no_object_repr() -> None:
    for data in (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"GIF89a" + b"\0" * 64, b"BM" + b"\1" * 64):
        with pytest.raises(CorruptImage) as info:
            check(data, "x.img")
        assert " at 0x" not in str(info.value) and "object" not in str(info.value)


def fields_stream(**kw: Any) -> MultipartStream:
    return MultipartStream(
        "multipart/form-data; boundary=b0und", io.BytesIO, known_fields=OPTION_FIELDS, **kw
    )


def test_an_unknown_field_is_refused_as_soon_as_its_headers_end() -> None:
    stream = fields_stream()
    head = b'--b0und\r\nContent-Disposition: form-data; name="priority"\r\n\r\n'
    with pytest.raises(InvalidField) as info:
        stream.feed(head)  # no value, no end of body: refused already
    assert info.value.field == "priority"
    stream.close()


def test_form_fields_are_capped_in_number_and_size() -> None:
    stream = fields_stream(max_fields=2)
    with pytest.raises(InvalidField, match=r"api\.max_form_fields"):
        stream.feed(multipart([(f, None, b"x") for f in ("mode", "runtime", "skip_invalid")]))
    stream.close()
    stream = fields_stream(max_field_bytes=100)
    with pytest.raises(InvalidField, match=r"api\.max_form_bytes"):
        stream.feed(multipart([("mode", None, b"x" * 60), ("runtime", None, b"y" * 60)]))
    stream.close()


def test_a_part_header_is_capped() -> None:
    stream = fields_stream()
    # (python-multipart caps each line and their number itself, in its recent versions)
    line = b"X-Pad: " + b"a" * 4000 + b"\r\n"
    body = b"--b0und\r\n" + line * (MAX_PART_HEADER_BYTES // 4000 + 1)
    with pytest.raises(InvalidField, match="headers are over"):
        stream.feed(body)
    stream.close()


def digest_of(body: bytes, boundary: str, query: dict[str, str] | None = None) -> str:
    stream = MultipartStream(f"multipart/form-data; boundary={boundary}", io.BytesIO)
    for part in stream.feed(body):
        assert part.file is not None
        part.file.close()
    stream.finish()
    options = parse_options(
        {**(query or {}), **stream.fields},
        runtimes=["edge", "gpu1"],
        default_mode=Mode.SELECTOR,
        idempotency_key=None,
    )
    return request_digest(options, stream.files)


def test_the_request_digest_ignores_the_boundary_and_sees_everything_else() -> None:
    parts = [("mode", None, b"duplicator"), ("files", "a.jpg", jpeg(1)), ("files", "b.png", png())]
    d = digest_of(multipart(parts, "one"), "one")
    assert d == digest_of(multipart(parts, "other"), "other")
    # The same option as a query parameter, or spelled otherwise, is the same request.
    assert d == digest_of(multipart(parts[1:], "q"), "q", {"mode": "duplicator"})
    changed = [
        [("mode", None, b"selector"), *parts[1:]],
        [*parts[:2], ("files", "b.png", png(1))],
        [*parts[:2], ("files", "c.png", png())],
        parts[:2],
        [parts[0], parts[2], parts[1]],
    ]
    assert len({d, *(digest_of(multipart(p, "x"), "x") for p in changed)}) == 1 + len(changed)


def png_with_idat(data: bytes, idat: bytes) -> bytes:
    """``data`` (a PNG) with its image data replaced, every CRC correct."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    start = data.index(b"IDAT") - 4
    end = data.index(b"IEND") - 4
    return data[:start] + chunk(b"IDAT", idat) + data[end:]


def test_a_png_is_validated_without_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image, ImageFile

    def no_decode(self: Any) -> Any:
        raise AssertionError("a PNG was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    for mode, size, interlace in [("RGB", (640, 480), 0), ("RGBA", (33, 17), 1), ("P", (7, 3), 0)]:
        buf = io.BytesIO()
        Image.new(mode, size).save(buf, "PNG", interlace=interlace)
        assert check(buf.getvalue(), "ok.png") == "PNG"


def test_a_png_whose_stream_is_broken_under_correct_crcs_is_refused() -> None:
    good = png(3)
    stream = zlib.decompress(good[good.index(b"IDAT") + 4 : good.index(b"IEND") - 8])
    cases = {
        "cut.png": zlib.compress(stream)[:-6],  # the zlib stream does not end
        "short.png": zlib.compress(stream[:-10]),  # ends, but rows are missing
        "long.png": zlib.compress(stream + b"\0" * 100),  # more data than the header says
        "junk.png": b"\x78\x9c" + b"\xff" * 50,  # not deflate at all
    }
    for name, idat in cases.items():
        with pytest.raises(CorruptImage) as info:
            check(png_with_idat(good, idat), name)
        assert info.value.file == name
    assert check(png_with_idat(good, zlib.compress(stream, 1)), "recompressed.png") == "PNG"


def _parse(body: bytes) -> MultipartStream:
    stream = MultipartStream(
        "multipart/form-data; boundary=b0und", io.BytesIO, known_fields={"mode", "runtime"}
    )
    for part in stream.feed(body):
        assert part.file is not None
        part.file.close()
    stream.finish()
    return stream


def test_a_form_field_given_twice_is_refused() -> None:
    body = multipart([("mode", None, b"selector"), ("mode", None, b"share")])
    with pytest.raises(InvalidField, match="'mode' is given more than once") as e:
        _parse(body)
    assert e.value.field == "mode"


def test_a_file_without_a_name_is_refused_and_an_empty_file_input_is_no_file() -> None:
    def part(data: bytes) -> bytes:
        return (
            b'--b0und\r\nContent-Disposition: form-data; name="files"; filename=""\r\n\r\n'
            + data
            + b"\r\n--b0und--\r\n"
        )

    with pytest.raises(InvalidField, match="empty file name"):
        _parse(part(jpeg(1)))
    stream = _parse(part(b""))  # what a browser sends for a file input left empty
    assert stream.files == [] and stream.fields == {}


def test_files_as_a_plain_field_asks_for_an_image() -> None:
    with pytest.raises(InvalidField, match="choose at least one image") as e:
        _parse(multipart([("files", None, b"photo.jpg")]))
    assert e.value.field == "files"
