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


@dataclass
class StreamTiming:
    ttft_s: float | None = None
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)  # gaps between token-bearing chunks (bench_serving's ITL)
    events: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    cached_tokens: int | None = None
    error: str | None = None
    done: bool = False

    @property
    def tokens(self) -> int:
        """Output tokens: the server's usage when it sent one, else the token-bearing events."""
        return self.completion_tokens if self.usage_reported else self.events

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (n − 1); None for n < 2."""
        n = self.tokens
        if self.ttft_s is None or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)


def _has_token(delta: dict[str, Any]) -> bool:
    # SGLang names the reasoning field reasoning_content, vLLM reasoning: either starts the clock.
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))


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
        line = line.strip()
        if not line.startswith(DATA):
            continue  # blank separators, comments (": keep-alive"), event names
        payload = line[len(DATA) :].strip()
        if payload == DONE:
            out.done = True
            out.e2e_s = now - t0
            break
        try:
            obj = json.loads(payload)
        except ValueError:
            out.error = f"malformed SSE data: {payload[:120]!r}"
            break
        if "error" in obj:
            err = obj["error"]
            out.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            out.e2e_s = now - t0
            break
        for choice in obj.get("choices") or ():
            if _has_token(choice.get("delta") or {}):
                out.events += 1
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
        out.e2e_s = now - t0
    if not out.done and out.error is None:
        out.error = "stream ended without data: [DONE]"
        out.e2e_s = clock() - t0
    return out
