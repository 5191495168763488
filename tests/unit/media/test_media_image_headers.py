"""Image sizes come from the file header (PNG, JPEG, GIF, WebP) and cost one prompt token per
32 × 32 pixels (patch 16 × spatial merge 2)."""

from __future__ import annotations

import struct

import pytest

from serving.media import ImageError, decode_data_url, image_size, image_tokens
from tests.images import data_url, jpeg, png

pytestmark = pytest.mark.unit


def test_sizes_are_read_from_png_jpeg_gif_and_webp_headers():
    assert image_size(png(640, 480)) == (640, 480)
    assert image_size(jpeg(1920, 1080)) == (1920, 1080)
    assert image_size(b"GIF89a" + struct.pack("<HH", 33, 17) + b"\x00" * 8) == (33, 17)
    vp8x = b"RIFF" + b"\x00" * 4 + b"WEBPVP8X" + b"\x00" * 8 + (99).to_bytes(3, "little") + (49).to_bytes(3, "little")
    assert image_size(vp8x) == (100, 50)
    assert image_size(b"BM not an image we read") is None


def test_one_token_per_32_by_32_pixels_rounded_up():
    assert image_tokens(32, 32) == 1
    assert image_tokens(640, 480) == 20 * 15
    assert image_tokens(1920, 1080) == 60 * 34  # 1080 / 32 = 33.75 → 34


def test_a_data_url_decodes_to_its_bytes_and_pixels():
    raw = png(64, 96)
    image = decode_data_url(data_url(raw))
    assert (image.media_type, image.bytes, image.width, image.height, image.tokens) == (
        "image/png",
        len(raw),
        64,
        96,
        6,
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [("https://x/y.png", "not a data URL"), ("data:image/png,plain", "base64"), ("data:image/png;base64,@@", "base64")],
)
def test_bad_data_urls_say_why(url, why):
    with pytest.raises(ImageError, match=why):
        decode_data_url(url)
