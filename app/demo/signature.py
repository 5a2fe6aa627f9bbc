"""A drawn signature as a PNG data URL, for demo consents."""
from __future__ import annotations

import base64
import math
import struct
import zlib

WIDTH, HEIGHT = 240, 80


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def signature_png() -> bytes:
    pixels = [[255] * WIDTH for _ in range(HEIGHT)]
    for x in range(10, WIDTH - 10):
        y = int(HEIGHT / 2 + 18 * math.sin(x / 11) * math.cos(x / 37))
        for dy in (-1, 0, 1):
            pixels[y + dy][x] = 20
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def signature_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(signature_png()).decode()
