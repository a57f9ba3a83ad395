"""Validate a PNG's image data without decoding the image: O(64 KiB) of memory.

Pillow decodes a PNG in full (a JPEG can be decoded at 1/8 scale, a PNG cannot), so
validating one of 50 megapixels that way costs 150–200 MB; an attacker who sends such
images, corrupt at the very end, gets that much memory per validation for free. Most
of what a decode would check is checked already: ``verify()`` walks every chunk to
``IEND`` and checks each CRC-32, so a truncated or bit-flipped file fails there. What
is left is the zlib stream inside the ``IDAT`` chunks (a crafted file can carry
correct CRCs over a broken stream); :func:`check_png_data` inflates it in 64 KiB
pieces, throwing the output away, and checks that it ends and that it holds exactly
the bytes the header implies (rows of ``1 + ceil(width × bits / 8)`` bytes, per Adam7
pass when interlaced). Filter-type bytes are not checked: an image with a bad one
passes here and fails in the function, which reports it per image.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import BinaryIO

from stoic.errors import RequestAborted

PIECE = 64 * 1024

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel by PNG colour type (grey, RGB, palette, grey+alpha, RGBA)."""

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip
"""(x0, y0, dx, dy) of the seven passes of an interlaced image."""


def raw_size(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Bytes of the filtered image data an IHDR implies (a filter byte per row)."""
    bits = _CHANNELS[color_type] * bit_depth
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        w = (width - x0 + dx - 1) // dx if width > x0 else 0
        h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if w and h:
            total += h * (1 + (w * bits + 7) // 8)
    return total


def check_png_data(f: BinaryIO, cancelled: threading.Event | None = None) -> None:
    """Inflate the ``IDAT`` stream of ``f`` (a PNG whose chunks ``verify()`` accepted)
    and raise ``ValueError`` unless it is one complete zlib stream of exactly the size
    the header implies. Stops at the next piece when ``cancelled`` is set."""
    f.seek(8)
    expected: int | None = None
    inflate = zlib.decompressobj()
    got = 0

    def take(out: bytes) -> None:
        nonlocal got
        got += len(out)
        if expected is not None and got > expected:
            raise ValueError(f"image data is longer than the {expected} bytes its header implies")

    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("no IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR":
            width, height, depth, color, _comp, _filter, interlace = struct.unpack(
                ">IIBBBBB", f.read(13)
            )
            if color not in _CHANNELS:
                raise ValueError(f"unknown colour type {color}")
            expected = raw_size(width, height, depth, color, interlace)
            f.seek(length - 13 + 4, 1)
        elif kind == b"IDAT":
            left = length
            while left:
                if cancelled is not None and cancelled.is_set():
                    raise RequestAborted("the upload was cancelled")
                piece = f.read(min(PIECE, left))
                if not piece:
                    raise ValueError("IDAT chunk cut short")
                left -= len(piece)
                take(inflate.decompress(piece, PIECE))
                while inflate.unconsumed_tail:
                    take(inflate.decompress(inflate.unconsumed_tail, PIECE))
            f.seek(4, 1)
        elif kind == b"IEND":
            break
        else:
            f.seek(length + 4, 1)
    if expected is None:
        raise ValueError("no IHDR chunk")
    if not inflate.eof:
        raise ValueError("the image data stream is cut short")
    if got != expected:
        raise ValueError(f"image data of {got} bytes where the header implies {expected}")
