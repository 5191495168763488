"""Deterministic stand-ins for the tokenizer and the model's output.

Tokenizer approximation: one token per 4 characters of UTF-8-decoded text (rounded up, at least 1).
Chat requests are rendered with a Qwen-like template (``<|im_start|>role\\ncontent<|im_end|>\\n`` per
message, tools as a system block, then ``<|im_start|>assistant\\n``) and that text is counted.
For the prefix cache the rendered text is cut into pages of ``PAGE_TOKENS`` tokens (``4 × PAGE_TOKENS``
characters) and each page gets a hash chained on the previous one, so two prompts share cached pages
exactly as far as their rendered text agrees (page granularity, like SGLang's paged radix cache).

Output: filler words from a fixed list, one word per token, chosen from the request's seed (or 0), so
the same request always produces the same text.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
PAGE_TOKENS = 16
PAGE_CHARS = PAGE_TOKENS * CHARS_PER_TOKEN

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "silver",
    "engines",
    "hum",
    "softly",
    "under",
    "bright",
    "lights",
    "and",
    "patient",
    "queues",
    "wait",
    "for",
    "their",
    "turn",
    "to",
    "speak",
    "in",
    "measured",
    "tokens",
]
# Every filler token is " word": JSON-safe as is, so it needs no escaping on the hot path.
_TOKENS = tuple(" " + w for w in WORDS)


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


def page_hashes(text: str) -> list[int]:
    """Chained hashes of each full page of ``text`` (a partial last page is never cached)."""
    out: list[int] = []
    h = 0
    for i in range(0, len(text) - PAGE_CHARS + 1, PAGE_CHARS):
        h = zlib.crc32(text[i : i + PAGE_CHARS].encode("utf-8", "surrogatepass"), h) ^ (i << 1)
        out.append(h)
    return out


def content_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, a list of parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, dict) and p.get("type") == "text":
            parts.append(str(p.get("text", "")))
        elif isinstance(p, dict):
            parts.append("<|vision_pad|>")  # images/audio: a placeholder; the simulator sees no pixels
    return "".join(parts)


def render_chat(messages: list[dict[str, Any]], tools: list[Any] | None, thinking: bool) -> str:
    out = []
    if tools:
        out.append("<|im_start|>system\n# Tools\n" + json.dumps(tools, sort_keys=True) + "<|im_end|>\n")
    for m in messages:
        body = content_text(m.get("content"))
        if m.get("tool_calls"):
            body += json.dumps(m["tool_calls"], sort_keys=True)
        out.append(f"<|im_start|>{m.get('role')}\n{body}<|im_end|>\n")
    out.append("<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n"))
    return "".join(out)


def filler(n: int, seed: int) -> list[str]:
    k = len(_TOKENS)
    start = seed % k
    return [_TOKENS[(start + 7 * i) % k] for i in range(n)]


# ---- output plan -------------------------------------------------------------------------------

CONTENT, REASONING, TOOL_NAME, TOOL_ARGS = "content", "reasoning", "tool_name", "tool_args"


@dataclass
class Output:
    """What the simulated model will say: one (kind, text) piece per generated token."""

    pieces: list[tuple[str, str]]
    finish_reason: str  # "stop" | "length" | "tool_calls"
    matched_stop: str | int | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    reasoning_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.pieces)

    def text(self, kind: str) -> str:
        return "".join(t for k, t in self.pieces if k == kind)


EOS_TOKEN_ID = 248046  # <|im_end|> in the Qwen3.6 vocabulary


def _example_value(schema: Any) -> Any:
    t = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(t, list):
        t = t[0] if t else None
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    return {"string": "sim", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(str(t), "sim")


def tool_arguments(fn: dict[str, Any]) -> str:
    params = fn.get("parameters") or {}
    props = params.get("properties") or {} if isinstance(params, dict) else {}
    required = params.get("required") or list(props) if isinstance(params, dict) else []
    return json.dumps({k: _example_value(props.get(k, {})) for k in required if isinstance(k, str)})


def plan_output(
    *,
    max_new: int,
    exact: bool,
    seed: int,
    thinking: bool,
    stop: list[str],
    tool: dict[str, Any] | None,
    call_id: str,
) -> Output:
    """The pieces of one answer.

    - ``thinking``: the first half of the tokens (at least one) are reasoning, the rest content.
    - ``tool``: after any reasoning, the call's name is one token and its JSON arguments follow,
      4 characters a token; finish_reason "tool_calls" (a tool call is cut short by max_tokens too).
    - ``stop``: the text ends before the first stop string found in the content; finish "stop".
    - ``exact`` (max_tokens given, or ignore_eos): exactly ``max_new`` tokens, finish "length";
      otherwise the model stops after ``max_new`` tokens with EOS, finish "stop".
    """
    words = filler(max_new, seed)
    pieces: list[tuple[str, str]] = []
    n_reason = max(1, max_new // 2) if thinking and max_new > 1 else 0
    pieces.extend((REASONING, w) for w in words[:n_reason])
    finish = "length" if exact else "stop"
    matched: str | int | None = None if exact else EOS_TOKEN_ID
    if tool is not None:
        fn = tool.get("function", {})
        args = tool_arguments(fn)
        room = max_new - n_reason
        if room >= 1:
            pieces.append((TOOL_NAME, str(fn.get("name", ""))))
            chunks = [args[i : i + CHARS_PER_TOKEN] for i in range(0, len(args), CHARS_PER_TOKEN)]
            pieces.extend((TOOL_ARGS, c) for c in chunks[: room - 1])
            if len(chunks) <= room - 1:
                finish, matched = "tool_calls", None
        return Output(pieces, finish, matched, str(fn.get("name", "")), call_id, n_reason)
    content = words[n_reason:]
    if stop:
        acc = ""
        for i, w in enumerate(content):
            acc += w
            hit = next((s for s in stop if s and s in acc), None)
            if hit is not None:
                cut = acc.index(hit)
                prev = acc[:cut]
                done = len("".join(content[:i]))
                last = prev[done:]
                content = content[:i] + ([last] if last else [])
                finish, matched = "stop", hit
                break
    pieces.extend((CONTENT, w) for w in content)
    return Output(pieces, finish, matched, reasoning_tokens=n_reason)
