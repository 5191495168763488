"""Timing of one OpenAI streaming response, read line by line as the bytes arrive.

The reader is any ``readline()`` that returns one line as soon as its newline has arrived (and
``b""`` at the end of the body) — never a fixed-size chunk reader, which would hold early events
back until the chunk fills and so fake the timings. :mod:`loadtest.user` hands in geventhttpclient's
``HTTPSocketResponse.readline``, which returns from its buffer and otherwise waits for whatever
the socket has (``recv``), so each event is timed when it lands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DATA = b"data:"
DONE = b"[DONE]"


REASONING_FROM_USAGE = "usage"  # usage.completion_tokens_details.reasoning_tokens
REASONING_FROM_DELTAS = "deltas"  # one token per reasoning delta (no usage, or one token per event)
REASONING_FROM_CHARS = "chars"  # multi-token deltas: usage's total split by reasoning's share of the text


@dataclass
class StreamTiming:
    ttft_s: float | None = None  # first content or reasoning delta
    ttfa_s: float | None = None  # first answer delta (``delta.content``), the first token a user reads
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)  # gaps between token-bearing chunks (bench_serving's ITL)
    events: int = 0
    reasoning_events: int = 0  # chunks carrying reasoning text
    answer_events: int = 0  # chunks carrying content (a chunk may carry both at the hand-over)
    reasoning_chars: int = 0
    answer_chars: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    usage_reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens
    cached_tokens: int | None = None
    error: str | None = None
    done: bool = False

    @property
    def tokens(self) -> int:
        """Output tokens: the server's usage when it sent one, else the token-bearing events."""
        return self.completion_tokens if self.usage_reported else self.events

    @property
    def reasoning_tokens_source(self) -> str:
        """Where :attr:`reasoning_tokens` comes from: ``usage``, ``deltas`` or ``chars``."""
        if self.usage_reasoning_tokens is not None:
            return REASONING_FROM_USAGE
        if self.reasoning_events and self.usage_reported and self.events != self.completion_tokens:
            return REASONING_FROM_CHARS  # some deltas carried several tokens: counting them undercounts
        return REASONING_FROM_DELTAS

    @property
    def reasoning_tokens(self) -> int:
        """Thinking tokens: the server's count when it reports one, else counted from the stream."""
        src = self.reasoning_tokens_source
        if src == REASONING_FROM_USAGE:
            return min(self.tokens, self.usage_reasoning_tokens or 0)
        if src == REASONING_FROM_CHARS:
            chars = self.reasoning_chars + self.answer_chars
            return round(self.tokens * self.reasoning_chars / chars) if chars else 0
        return min(self.reasoning_events, self.tokens)

    @property
    def answer_tokens(self) -> int:
        """Output tokens that are not thinking: the answer (and any tool call) the user gets."""
        return max(0, self.tokens - self.reasoning_tokens)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (n − 1); None for n < 2."""
        n = self.tokens
        if self.ttft_s is None or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)


def _text(x: Any) -> str:
    return x if isinstance(x, str) else ""


def _tool_chars(calls: Any) -> int:
    n = 0
    for c in calls if isinstance(calls, list) else ():
        f = c.get("function") if isinstance(c, dict) else None
        if isinstance(f, dict):
            n += len(_text(f.get("name"))) + len(_text(f.get("arguments")))
    return n


def split_delta(delta: dict[str, Any]) -> tuple[str, str]:
    """(reasoning text, answer text) of one delta. SGLang names the reasoning field
    ``reasoning_content``, vLLM ``reasoning``: either counts as reasoning and starts the TTFT clock."""
    return _text(delta.get("reasoning_content")) + _text(delta.get("reasoning")), _text(delta.get("content"))


@dataclass(frozen=True)
class DataLine:
    """One ``data:`` line of an OpenAI stream: the end marker, a JSON object, or a payload that is
    not JSON (``malformed``, its first 120 bytes)."""

    done: bool = False
    obj: dict[str, Any] = field(default_factory=dict)
    malformed: bytes | None = None


def parse_data_line(line: bytes) -> DataLine | None:
    """The client side's one SSE reader (load tests and benchmarks): None for what is not a data
    line (blank separators, ``: keep-alive`` comments, event names)."""
    line = line.strip()
    if not line.startswith(DATA):
        return None
    payload = line[len(DATA) :].strip()
    if payload == DONE:
        return DataLine(done=True)
    try:
        obj = json.loads(payload)
    except ValueError:
        return DataLine(malformed=payload[:120])
    return DataLine(obj=obj if isinstance(obj, dict) else {})


def read_stream(
    readline: Callable[[], bytes], t0: float, clock: Callable[[], float] = time.perf_counter
) -> StreamTiming:
    """Consume an SSE body; ``t0`` is ``clock()`` taken just before the request was sent."""
    out = StreamTiming()
    last: float | None = None
    while True:
        line = readline()
        if not line:
            break
        now = clock()
        data = parse_data_line(line)
        if data is None:
            continue
        if data.done:
            out.done = True
            out.e2e_s = now - t0
            break
        if data.malformed is not None:
            out.error = f"malformed SSE data: {data.malformed!r}"
            break
        obj = data.obj
        if "error" in obj:
            err = obj["error"]
            out.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            out.e2e_s = now - t0
            break
        for choice in obj.get("choices") or ():
            d = choice.get("delta") or {}
            reasoning, answer = split_delta(d)
            if d.get("tool_calls"):  # answer output too, though not a content token (no clock starts)
                out.answer_chars += _tool_chars(d["tool_calls"])
            if not (reasoning or answer):
                continue
            out.events += 1
            if reasoning:
                out.reasoning_events += 1
                out.reasoning_chars += len(reasoning)
            if answer:
                out.answer_events += 1
                out.answer_chars += len(answer)
                if out.ttfa_s is None:
                    out.ttfa_s = now - t0
            if out.ttft_s is None:
                out.ttft_s = now - t0
            else:
                assert last is not None
                out.itl_s.append(now - last)
            last = now
            break
        usage = obj.get("usage")
        if usage:
            out.usage_reported = True
            out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            out.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens") is not None:
                out.cached_tokens = int(details["cached_tokens"])
            cdetails = usage.get("completion_tokens_details") or {}
            if cdetails.get("reasoning_tokens") is not None:
                out.usage_reasoning_tokens = int(cdetails["reasoning_tokens"])
        out.e2e_s = now - t0
    if not out.done and out.error is None:
        out.error = "stream ended without data: [DONE]"
        out.e2e_s = clock() - t0
    return out
