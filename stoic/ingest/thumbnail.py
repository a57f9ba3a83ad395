"""Thumbnails for the operator page's results view, made while an image is validated.

The results view shows a batch's images as small pictures beside their labels. Made
when the page is opened, they would cost a decode of every full-size image again (a
thousand 1080p JPEGs: seconds, on the machine that receives the uploads); at ingest the
image is decoded anyway to validate it, at reduced scale (libjpeg's DCT scaling:
240 × 135 for a 1080p frame: :data:`DRAFT` asks for the smallest scale that still
covers a thumbnail, which for camera-trap frames is the 1/8 scale validation decoded
at before thumbnails existed), so a thumbnail costs a resize of that
and a small JPEG encode, about a millisecond. A PNG gets none: validation never decodes
one (a small file can hold a huge image, :mod:`stoic.ingest.png`), camera traps write
JPEG, and the page says "no thumbnail". A thumbnail that cannot be made is never a
reason to refuse an image: the image is valid, it just has no picture.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

THUMBNAIL_PX: Final = 128
"""The longest side of a thumbnail, in pixels (a 4:3 frame gives 128 × 96, ~3 KB)."""
QUALITY: Final = 70


DRAFT: Final = (THUMBNAIL_PX, THUMBNAIL_PX)
"""What to ask ``Image.draft`` for: the smallest DCT scale still this large."""


def thumbnail(im: Image.Image) -> bytes:
    """A loaded image as a small JPEG (aspect ratio kept); raises what Pillow raises."""
    small = im.convert("RGB")
    small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()
