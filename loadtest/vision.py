"""Synthetic screenshots for the vision scenario: PNGs drawn locally, sent as base64 data URLs.

Qwen3.6's vision tower cuts an image into 16×16-pixel patches and merges 2×2 neighbouring patches
into one language-model token, so one prompt token stands for a 32×32-pixel tile:
``ceil(w / 32) · ceil(h / 32)`` tokens per image (:func:`image_tokens`). That is the *expected*
count the records carry; the engine's processor may resize (minimum / maximum pixel limits) and
adds a few vision start / end tokens, so the server's ``usage.prompt_tokens`` stays the measure.

Each (size, variant) is drawn and encoded once per process and then reused, so the load generator
spends its CPU on requests, not on PNG encoding; ``variants`` different pictures per size keep an
engine's image cache from serving every request.
"""

from __future__ import annotations

import base64
import io
import math
import random
from functools import lru_cache

PATCH = 16
SPATIAL_MERGE = 2
PNG_DATA_URL = "data:image/png;base64,"


def image_tokens(width: int, height: int, patch: int = PATCH, merge: int = SPATIAL_MERGE) -> int:
    """Prompt tokens one image costs: one per (patch × merge)² pixel tile, partial tiles rounded up."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    tile = patch * merge
    return math.ceil(width / tile) * math.ceil(height / tile)


@lru_cache(maxsize=256)
def screenshot_png(width: int, height: int, variant: int = 0) -> bytes:
    """A PNG that looks roughly like a desktop screenshot: title bar, side bar, lines of 'text'."""
    from PIL import Image, ImageDraw

    rng = random.Random(width * 1_000_003 + height * 7919 + variant)  # noqa: S311 - picture content
    bg = (rng.randrange(225, 256), rng.randrange(225, 256), rng.randrange(225, 256))
    img = Image.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(img)
    bar = max(8, height // 30)
    d.rectangle((0, 0, width, bar), fill=(rng.randrange(40, 90),) * 3)
    side = width // 5
    d.rectangle((0, bar, side, height), fill=(rng.randrange(200, 230), rng.randrange(200, 230), 240))
    line = max(4, height // 60)
    y = bar + line
    while y + line < height:
        for x0, x1 in ((line, side - line), (side + 2 * line, width - 2 * line)):
            if x1 - x0 > line:
                end = x0 + int((x1 - x0) * rng.uniform(0.3, 1.0))
                shade = rng.randrange(30, 120)
                d.rectangle((x0, y, end, y + line // 2 + 1), fill=(shade, shade, shade + rng.randrange(0, 100)))
        y += 2 * line
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@lru_cache(maxsize=256)
def screenshot_data_url(width: int, height: int, variant: int = 0) -> str:
    return PNG_DATA_URL + base64.b64encode(screenshot_png(width, height, variant)).decode("ascii")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError when ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_data_url(url: str) -> bytes:
    if not url.startswith(PNG_DATA_URL):
        raise ValueError(f"not a base64 PNG data URL: {url[:40]!r}")
    return base64.b64decode(url[len(PNG_DATA_URL) :], validate=True)
