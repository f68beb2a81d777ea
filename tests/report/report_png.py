"""A minimal PNG reader for screenshots (8-bit RGB/RGBA, not interlaced; PNG spec §§ 7, 9, 11).

Enough to check a screenshot is not blank without an imaging library: decode the pixels,
then count those that differ from the page background.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind: int, row: bytearray, prev: bytes, bpp: int) -> None:
    """Undo one scanline's filter in place (§9.2: None, Sub, Up, Average, Paeth)."""
    n = len(row)
    if kind == 0:
        return
    if kind == 2:
        row[:] = bytes((x + y) & 0xFF for x, y in zip(row, prev))
        return
    for i in range(n):
        a = row[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + a) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + ((a + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            c = prev[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + _paeth(a, prev[i], c)) & 0xFF
        else:
            raise ValueError(f"PNG: unknown filter type {kind}")


def decode(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of raw pixel bytes)."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"PNG: only 8-bit RGB/RGBA, not interlaced (depth {depth}, colour type {colour})")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows, prev = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(raw[start], row, prev, bpp)
        rows.append(bytes(row))
        prev = rows[-1]
    return width, height, bpp, rows


def content_stats(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, int, int]:
    """(pixels, pixels unlike the background, distinct colours) of a PNG."""
    width, height, bpp, rows = decode(data)
    bg = bytes(background)
    unlike, colours = 0, set()
    for row in rows:
        for x in range(0, len(row), bpp):
            px = row[x:x + 3]
            if px != bg:
                unlike += 1
                if len(colours) < 4096:
                    colours.add(px)
    return width * height, unlike, len(colours)
