"""Images in chat requests: checked against ``gateway.limits`` and counted, then passed to the
engine unchanged.

- ``image_url`` parts with a ``data:`` URL (base64) are decoded only far enough to know their size
  in bytes and pixels (:mod:`serving.media`); past ``max_image_bytes`` or ``max_image_pixels``, or
  more than ``max_images`` in one request, the request gets a 400 naming the part.
- ``http(s)`` image URLs pass through unchecked: the engine fetches them.
- ``video_url`` parts pass through (SGLang and vLLM accept them); their cost is the engine's.
- A body may be up to ``max_image_body_bytes`` when it carries images, ``max_body_bytes`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.config.settings import LimitSettings
from serving.gateway.errors import ApiError
from serving.media import ImageError, decode_data_url


@dataclass(frozen=True)
class Images:
    count: int = 0
    tokens: int = 0  # prompt tokens of the data-URL images (patch 16 × merge 2); URLs not counted
    payload_bytes: int = 0  # base64 characters of data URLs (not text: left out of token estimates)


NONE = Images()


def check_images(body: dict[str, Any], limits: LimitSettings, body_bytes: int) -> Images:
    count = tokens = payload = 0
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            param = f"messages.{i}.content.{j}.image_url"
            count += 1
            if count > limits.max_images:
                raise ApiError(400, f"{param}: at most {limits.max_images} images per request "
                               "(gateway.limits.max_images)", code="too_many_images", param=param)  # fmt: skip
            url = str((part.get("image_url") or {}).get("url") or "")
            if url.startswith(("http://", "https://")):
                continue
            tokens += _data_image_tokens(url, param, limits)
            payload += len(url)
    if count == 0:
        check_text_body(body_bytes, limits)
    return Images(count, tokens, payload) if count else NONE


def check_text_body(body_bytes: int, limits: LimitSettings) -> None:
    """A body without images may be at most ``max_body_bytes`` (413 past it)."""
    if body_bytes > limits.max_body_bytes:
        raise ApiError(413, f"request body larger than {limits.max_body_bytes} bytes without images "
                       "(gateway.limits.max_body_bytes)", code="body_too_large")  # fmt: skip


def _data_image_tokens(url: str, param: str, limits: LimitSettings) -> int:
    if not url.startswith("data:"):
        raise ApiError(400, f"{param}.url must be an http(s) URL or a data: URL", code="invalid_image", param=param)
    try:
        image = decode_data_url(url)
    except ImageError as e:
        raise ApiError(400, f"{param}: {e}", code="invalid_image", param=param) from None
    if not image.media_type.startswith("image/"):
        raise ApiError(400, f"{param}: a data URL of type {image.media_type!r} is not an image",
                       code="invalid_image", param=param)  # fmt: skip
    if image.bytes > limits.max_image_bytes:
        raise ApiError(400, f"{param}: {image.bytes} bytes decoded, above gateway.limits.max_image_bytes "
                       f"({limits.max_image_bytes})", code="image_too_large", param=param)  # fmt: skip
    if image.width is None or image.height is None:
        raise ApiError(400, f"{param}: unreadable image header (PNG, JPEG, GIF and WebP are checked); "
                       "send one of those or an http(s) URL", code="invalid_image", param=param)  # fmt: skip
    if image.width * image.height > limits.max_image_pixels:
        raise ApiError(400, f"{param}: {image.width}×{image.height} pixels, above gateway.limits.max_image_pixels "
                       f"({limits.max_image_pixels})", code="image_too_large", param=param)  # fmt: skip
    return image.tokens or 0
