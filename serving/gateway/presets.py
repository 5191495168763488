"""Model presets applied to a request: sampling defaults for thinking or non-thinking mode when
the request leaves them unset, and the chat-template switches of a thinking model."""

from __future__ import annotations

from typing import Any

from serving.config.settings import Settings


def thinking_requested(body: dict[str, Any], s: Settings) -> bool:
    kw = body.get("chat_template_kwargs")
    if isinstance(kw, dict) and isinstance(kw.get("enable_thinking"), bool):
        return bool(kw["enable_thinking"])
    return s.reasoning.thinking_default


def apply_presets(body: dict[str, Any], s: Settings, *, chat: bool) -> bool:
    """Fill ``body`` in place; returns whether the request runs in thinking mode."""
    thinking = thinking_requested(body, s) if chat else s.reasoning.thinking_default
    if chat and s.reasoning.parser:  # a thinking model: make the template switches explicit
        kw = dict(body.get("chat_template_kwargs") or {})
        if kw.get("enable_thinking") is None:
            kw["enable_thinking"] = thinking
        if s.reasoning.preserve_thinking and kw.get("preserve_thinking") is None:
            kw["preserve_thinking"] = True
        body["chat_template_kwargs"] = kw
    spec = s.preset
    for k, v in (spec.thinking if thinking else spec.non_thinking).request_fields:
        if body.get(k) is None:
            body[k] = v
    return thinking
