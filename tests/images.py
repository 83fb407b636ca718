"""Image bytes for tests: real encoded photos, corrupt files and decompression bombs."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageDraw


def photo(seed: int = 0, size: tuple[int, int] = (96, 128), fmt: str = "JPEG") -> bytes:
    """A small synthetic product photo; different seeds give different bytes."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse(
            (x0, y0, x0 + rng.randrange(5, 40), y0 + rng.randrange(5, 40)),
            fill=tuple(rng.randrange(256) for _ in range(3)),
        )
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-header PNG claiming ``width`` x ``height`` grey pixels in a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    idat = compressor.compress(row * 16) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = photo(seed=99, size=(200, 200))
    return data[: len(data) // 2]
