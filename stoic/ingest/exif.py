"""What a camera trap wrote into its image: capture time and camera, from EXIF.

A camera trap's own clock is the only record of *when* an animal passed: the file's
modification time is when the card was copied, and the ingest time is later still.
So the ingest reads, for every image it accepts, the EXIF fields ecologists' tools
use (Camtrap DP's ``media.timestamp`` and ``deployments.cameraModel``/``cameraID``):

* ``DateTimeOriginal`` (the shutter's instant, local time of the camera), with
  ``OffsetTimeOriginal`` (``+02:00``) where the camera wrote one;
* ``Make`` and ``Model``;
* ``BodySerialNumber`` (EXIF 2.3), else the DNG ``CameraSerialNumber``.

Pillow reads them from what opening the image already parsed (a JPEG's APP1 segment,
a TIFF's directory, a WebP's or a PNG's ``eXIf`` chunk when it comes before the pixel
data): nothing is decoded for it, and the stored image is left as it came (nothing is
stripped). EXIF is the client's text, so every value is checked and capped: a
malformed date (``0000:00:00 00:00:00`` from a camera whose clock was never set) or an
unreadable EXIF block gives nulls, never a rejected image.
"""

from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image

MAX_TEXT_CHARS = 64
"""The longest make, model or serial number kept (longer EXIF text is cut)."""

_CAMERA_SERIAL_DNG = 0xC62F
_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")
_EXIF_DATE = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """One image's metadata. ``captured_at`` is ISO 8601 (``2024-05-01T06:12:33``,
    with ``+02:00`` when the camera recorded its offset from UTC); any field is None
    when the image does not carry it."""

    captured_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    camera_serial: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


NO_META = ImageMeta()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()
    return cleaned[:MAX_TEXT_CHARS] or None


def capture_time(original: Any, offset: Any) -> str | None:
    """``DateTimeOriginal`` (and ``OffsetTimeOriginal``) as ISO 8601, or None when the
    date is absent or not a real instant."""
    text = _text(original)
    if text is None:
        return None
    try:
        instant = datetime.strptime(text[:19], _EXIF_DATE)
    except ValueError:
        return None
    iso = instant.isoformat(timespec="seconds")
    zone = _text(offset)
    return iso + zone if zone is not None and _OFFSET.fullmatch(zone) else iso


def read_meta(im: Image.Image) -> ImageMeta:
    """The metadata of an opened (not yet verified) image; :data:`NO_META` when it has
    no EXIF or an EXIF block Pillow cannot parse (Pillow also warns about a corrupt
    one, ``UserWarning: Corrupt EXIF data``, as it opens a JPEG)."""
    if im.format == "PNG" and "exif" not in im.info:
        # Pillow would decode the whole image looking for an eXIf chunk after the data.
        return NO_META
    try:
        exif = im.getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        return ImageMeta(
            captured_at=capture_time(
                sub.get(ExifTags.Base.DateTimeOriginal), sub.get(ExifTags.Base.OffsetTimeOriginal)
            ),
            camera_make=_text(exif.get(ExifTags.Base.Make)),
            camera_model=_text(exif.get(ExifTags.Base.Model)),
            camera_serial=_text(sub.get(ExifTags.Base.BodySerialNumber))
            or _text(exif.get(_CAMERA_SERIAL_DNG)),
        )
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return NO_META
