"""The pixel size an image file declares, read from its header before anything is decoded.

A 1 MB PNG can declare 32000 x 32000 pixels (its rows of zeros compress to nothing) and decode
to 3 GB; a 1 KB one can declare 100000 x 100000.  :func:`declared_size` reads the width and
height from the header of the formats OpenCV decodes -- PNG (IHDR), JPEG (the SOF marker),
GIF, BMP, WebP (VP8, VP8L, VP8X), TIFF (the first IFD), PNM/PFM, Radiance HDR, Sun raster,
JPEG 2000 (ihdr) -- so :func:`~cnnvis_gui.sources.base.load_image` can refuse a file past
:data:`~cnnvis_gui.core.bounds.MAX_IMAGE_PIXELS` before the decoder allocates.  Formats it does
not know (OpenEXR, AVIF) are left to OpenCV's own limit, which the package sets to the same
bound (``OPENCV_IO_MAX_IMAGE_PIXELS``).
"""
from __future__ import annotations

import re
import struct

__all__ = ["declared_size"]


def declared_size(data) -> tuple | None:
    """(width, height) the image header in ``data`` (the file's first bytes or all of them) declares,
    or None when the format is not one of those read here or the header is cut short."""
    b = data if isinstance(data, bytes) else bytes(data)
    for reader in (_png, _jpeg, _gif, _bmp, _webp, _tiff, _pnm, _hdr, _sun, _jp2):
        try:
            size = reader(b)
        except (struct.error, IndexError, ValueError):
            size = None
        if size is not None:
            return size
    return None


def _png(b):
    if b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", b[16:24])
    return w, h


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(b):
    if b[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(b):
        if b[pos] != 0xFF:
            return None
        marker = b[pos + 1]
        if marker == 0xFF:               # fill bytes
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", b[pos + 2:pos + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", b[pos + 5:pos + 9])
            return w, h
        if marker == 0xD9 or length < 2:
            return None
        pos += 2 + length
    return None


def _gif(b):
    if b[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    return struct.unpack("<HH", b[6:10])


def _bmp(b):
    if b[:2] != b"BM":
        return None
    header = struct.unpack("<I", b[14:18])[0]
    if header == 12:
        w, h = struct.unpack("<HH", b[18:22])
    else:
        w, h = struct.unpack("<ii", b[18:26])
    return abs(w), abs(h)


def _webp(b):
    if b[:4] != b"RIFF" or b[8:12] != b"WEBP":
        return None
    kind = b[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff(b):
    order = {b"II": "<", b"MM": ">"}.get(b[:2])
    if order is None:
        return None
    magic = struct.unpack(order + "H", b[2:4])[0]
    if magic == 43:                      # BigTIFF
        off = struct.unpack(order + "Q", b[8:16])[0]
        n = struct.unpack(order + "Q", b[off:off + 8])[0]
        entry, first, size = 20, off + 8, {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
    elif magic == 42:
        off = struct.unpack(order + "I", b[4:8])[0]
        n = struct.unpack(order + "H", b[off:off + 2])[0]
        entry, first, size = 12, off + 2, {3: ("H", 2), 4: ("I", 4)}
    else:
        return None
    found = {}
    for i in range(min(int(n), 4096)):
        e = first + i * entry
        tag, typ = struct.unpack(order + "HH", b[e:e + 4])
        if tag in (256, 257) and typ in size:
            fmt, _ = size[typ]
            at = e + (12 if magic == 43 else 8)
            found[tag] = struct.unpack(order + fmt, b[at:at + struct.calcsize(fmt)])[0]
        if len(found) == 2:
            return found[256], found[257]
    return None


_PNM = re.compile(rb"P[1-7fF]\s+(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)")


def _pnm(b):
    if b[:1] != b"P" or b[1:2] not in b"1234567fF":
        return None
    if b[1:2] == b"7":                   # PAM: WIDTH / HEIGHT lines
        head = b[:4096]
        w = re.search(rb"\nWIDTH\s+(\d+)", head)
        h = re.search(rb"\nHEIGHT\s+(\d+)", head)
        return (int(w.group(1)), int(h.group(1))) if w and h else None
    m = _PNM.match(b[:4096])
    return (int(m.group(1)), int(m.group(2))) if m else None


_HDR_SIZE = re.compile(rb"\n([-+])([YX]) (\d+) ([-+])([YX]) (\d+)\n")


def _hdr(b):
    if not (b.startswith(b"#?RADIANCE") or b.startswith(b"#?RGBE")):
        return None
    m = _HDR_SIZE.search(b[:65536])
    if not m:
        return None
    first, second = int(m.group(3)), int(m.group(6))
    return (second, first) if m.group(2) == b"Y" else (first, second)


def _sun(b):
    if b[:4] != b"\x59\xa6\x6a\x95":
        return None
    return struct.unpack(">II", b[4:12])


def _jp2(b):
    if b[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        at = b.find(b"ihdr", 0, 4096)
        if at < 0:
            return None
        h, w = struct.unpack(">II", b[at + 4:at + 12])
        return w, h
    if b[:4] == b"\xff\x4f\xff\x51":     # a raw codestream: SIZ right after SOC
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", b[8:24])
        return xsiz - xo, ysiz - yo
    return None
