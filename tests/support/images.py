"""Images and archives to upload, made in memory and the same on every run (a seed picks
the colour), so a test can name the bytes it sent."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageDraw

from stoic.function.classifier import draw_scene


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, ((seed * 37) % 256, 90, 160)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (seed % 256, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def camera_image(
    seed: int = 0,
    *,
    captured: str | None = "2024:05:01 06:12:33",
    offset: str | None = None,
    make: str | None = "RECONYX",
    model: str | None = "HC600 HYPERFIRE",
    serial: str | None = None,
    fmt: str = "JPEG",
) -> bytes:
    """An image carrying a camera trap's EXIF, written by Pillow: DateTimeOriginal
    (``YYYY:MM:DD HH:MM:SS``) with OffsetTimeOriginal, Make, Model, BodySerialNumber;
    a None leaves the tag out."""
    exif = Image.Exif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tags, tag, value in (
        (exif, ExifTags.Base.Make, make),
        (exif, ExifTags.Base.Model, model),
        (sub, ExifTags.Base.DateTimeOriginal, captured),
        (sub, ExifTags.Base.OffsetTimeOriginal, offset),
        (sub, ExifTags.Base.BodySerialNumber, serial),
    ):
        if value is not None:
            tags[tag] = value
    buf = io.BytesIO()
    Image.new("RGB", (48, 36), ((seed * 53) % 256, 120, 60)).save(buf, fmt, exif=exif)
    return buf.getvalue()


def scene_jpeg(label: str, seed: int) -> bytes:
    """A scene the demo model can label (for the tests that run the real function)."""
    buf = io.BytesIO()
    draw_scene(label, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


SITE_LABELS = ("coyote", "empty", "heron")
"""A site's own classes for training tests: visibly distinct, learnt in a few epochs."""
_SITE_COLOURS = {"coyote": (205, 120, 40), "heron": (235, 235, 240)}


def site_scene(label: str, seed: int, size: tuple[int, int] = (48, 36)) -> bytes:
    """A JPEG of class ``label`` of :data:`SITE_LABELS`: a noisy grass background with
    a wide orange body (coyote), a tall white one (heron) or nothing (empty)."""
    rng = np.random.default_rng(seed)
    w, h = size
    ground = tuple(int(v) for v in rng.integers((40, 70, 20), (90, 120, 60)))
    img = Image.new("RGB", size, ground)
    if label in _SITE_COLOURS:
        bw, bh = int(rng.integers(14, 22)), int(rng.integers(10, 16))
        if label == "heron":
            bw, bh = bh // 2, bw
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        ImageDraw.Draw(img).ellipse((x0, y0, x0 + bw, y0 + bh), fill=_SITE_COLOURS[label])
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` × ``height`` (its CRC fixed up)."""
    ihdr = data.index(b"IHDR")
    body = b"IHDR" + struct.pack(">II", width, height) + data[ihdr + 12 : ihdr + 17]
    return data[:ihdr] + body + struct.pack(">I", zlib.crc32(body)) + data[ihdr + 21 :]


def tar_of(members: dict[str, bytes], mode: Any = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
