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
from collections.abc import Callable
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


def image_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens the vision tower adds for the data-URL images (patch 16 × merge 2, from the
    image's header); an http(s) image counts only its placeholder (the simulator fetches nothing)."""
    from serving.media import ImageError, decode_data_url

    total = 0
    for m in messages:
        content = m.get("content")
        for p in content if isinstance(content, list) else []:
            url = (
                (p.get("image_url") or {}).get("url") if isinstance(p, dict) and p.get("type") == "image_url" else None
            )
            if isinstance(url, str) and url.startswith("data:"):
                try:
                    total += decode_data_url(url).tokens or 0
                except ImageError:
                    continue
    return total


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
    """A value the JSON schema accepts (objects with their required properties, arrays with
    ``minItems`` items, enums' first value, consts, the first branch of anyOf/oneOf/allOf)."""
    if not isinstance(schema, dict):
        return "sim"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    branches = next((schema[k] for k in ("anyOf", "oneOf", "allOf") if isinstance(schema.get(k), list)), None)
    if branches:
        return _example_value(branches[0])
    return _BY_TYPE.get(_type_of(schema), lambda _: "sim")(schema)


def _type_of(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), t[0] if t else None)
    return "object" if t is None and "properties" in schema else (str(t) if t is not None else None)


def _example_object(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    required = schema.get("required") or list(props)
    return {k: _example_value(props.get(k, {})) for k in required if isinstance(k, str)}


def _example_number(schema: dict[str, Any]) -> float:
    return float(schema.get("minimum", schema.get("exclusiveMinimum", 1)) or 0) + 0.5


def _example_integer(schema: dict[str, Any]) -> int:
    return int(schema.get("minimum", schema.get("exclusiveMinimum", 0)) or 0) + 1


_BY_TYPE: dict[str | None, Callable[[dict[str, Any]], Any]] = {
    "object": _example_object,
    "array": lambda s: [_example_value(s.get("items") or {}) for _ in range(int(s.get("minItems") or 0))],
    "string": lambda s: "sim" * max(1, -(-int(s.get("minLength") or 0) // 3)),
    "integer": _example_integer,
    "number": _example_number,
    "boolean": lambda _: True,
    "null": lambda _: None,
}


def structured_answer(response_format: dict[str, Any]) -> str:
    """The answer text for ``response_format`` json_object / json_schema: valid JSON, schema-valid."""
    if response_format.get("type") == "json_schema":
        return json.dumps(_example_value(response_format["json_schema"]["schema"]))
    return json.dumps({"answer": "sim"})


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
    reasoning_tokens: int | None = None,
    response_format: dict[str, Any] | None = None,
) -> Output:
    """The pieces of one answer.

    - ``thinking``: ``reasoning_tokens`` of them are reasoning (the request's ``x_reasoning_tokens``
      hint; without one, the first half), at least one, leaving at least one for the answer.
    - ``response_format`` json_object / json_schema: the answer is JSON the schema accepts,
      4 characters a token (cut short by max_tokens like any answer).
    - ``tool``: after any reasoning, the call's name is one token and its JSON arguments follow,
      4 characters a token; finish_reason "tool_calls" (a tool call is cut short by max_tokens too).
    - ``stop``: the text ends before the first stop string found in the content; finish "stop".
    - ``exact`` (max_tokens given, or ignore_eos): exactly ``max_new`` tokens, finish "length";
      otherwise the model stops after ``max_new`` tokens with EOS, finish "stop".
    """
    words = filler(max_new, seed)
    pieces: list[tuple[str, str]] = []
    wanted = max_new // 2 if reasoning_tokens is None else reasoning_tokens
    n_reason = min(max(1, wanted), max_new - 1) if thinking and max_new > 1 else 0
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
    if response_format is not None:
        text = structured_answer(response_format)
        chunks = [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]
        room = max_new - n_reason
        pieces.extend((CONTENT, c) for c in chunks[:room])
        if len(chunks) <= room:
            finish, matched = "stop", EOS_TOKEN_ID
        return Output(pieces, finish, matched, reasoning_tokens=n_reason)
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
