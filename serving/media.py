"""Images in requests: what a data URL holds, its pixel size from the file header, and the prompt
tokens it costs a Qwen3.6 vision tower.

Qwen3.6's vision config: patch 16 × spatial merge 2, so one token per 32 × 32 pixels
(:func:`image_tokens`). Only the header is read (PNG, JPEG, GIF, WebP); no image is decoded.
Used by the gateway (limits, metrics) and the simulator (prefill and KV grow with images).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass

PATCH = 16
SPATIAL_MERGE = 2


def image_tokens(width: int, height: int, *, patch: int = PATCH, merge: int = SPATIAL_MERGE) -> int:
    side = patch * merge
    return math.ceil(width / side) * math.ceil(height / side)


@dataclass(frozen=True)
class Image:
    media_type: str
    bytes: int
    width: int | None
    height: int | None

    @property
    def tokens(self) -> int | None:
        return image_tokens(self.width, self.height) if self.width and self.height else None


class ImageError(ValueError):
    """A data URL that is not a readable image; the message says why."""


def decode_data_url(url: str) -> Image:
    """``data:image/png;base64,…`` → its decoded size and pixel dimensions (from the header)."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise ImageError("not a data URL (data:<media type>;base64,<data>)")
    media_type = head[5:].split(";", 1)[0] or "text/plain"
    if ";base64" not in head:
        raise ImageError("data URL is not base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("data URL holds invalid base64") from None
    width, height = image_size(data) or (None, None)
    return Image(media_type, len(data), width, height)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or WebP header; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])  # type: ignore[return-value]
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", data[6:10])  # type: ignore[return-value]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if kind == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None
