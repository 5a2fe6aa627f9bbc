"""Draw the app's home-screen icons (a white cross on the brand colour) as PNG files.

Run once after changing the design: python scripts/make_icons.py
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

BRAND = (0x1B, 0x5E, 0x7A)
WHITE = (0xFF, 0xFF, 0xFF)
OUT = Path(__file__).resolve().parent.parent / "static" / "icons"


def _png(size: int, pixel) -> bytes:
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y, size)) for x in range(size))
                    for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def cross(inset: float):
    """A cross whose arms span the middle of the icon; `inset` keeps it inside a maskable
    icon's safe zone."""
    def pixel(x: int, y: int, size: int):
        lo, hi = size * inset, size * (1 - inset)
        arm = (hi - lo) / 3
        mid_lo, mid_hi = lo + arm, hi - arm
        in_bar = (mid_lo <= x < mid_hi and lo <= y < hi) or (mid_lo <= y < mid_hi and lo <= x < hi)
        return WHITE if in_bar else BRAND
    return pixel


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(_png(size, cross(0.22)))
        (OUT / f"maskable-{size}.png").write_bytes(_png(size, cross(0.30)))
