"""The hot path of a stream: relay an engine's SSE bytes to the client as plain ASGI messages.

Per upstream read the work is: a read that is exactly one token chunk (a single-line JSON data
event with nothing buffered before it: the common read while the gateway keeps up) is told by its
two ends and three reverse searches (a usage object, the field to rename, reasoning text to count)
and passed on as it is. Any other read (under load most of them carry several events: 15 on
average at 64 saturating MTP streams) is cut at its last event boundary and checked by one reverse
search per marker (usage object, error event, ``[DONE]``, a blank event, the field to rename;
reverse searches for an absent literal are the cheap ones in CPython 3.11), and only the events
from the first marker on are looked at one by one. Then one clock read and one
``http.response.body`` message carrying everything that read returned (bytes are never held back
to batch them). Until the first answer token has been seen, each read is also searched for a token
(``TOKEN``, and ``has_answer``: ``ANSWER``'s literals by reverse search, for the TTFT metrics);
none after it. Only the usage chunk is parsed as JSON, once per request. The engine
is always asked for usage (``stream_options.include_usage``) so token metrics and limits are exact;
the usage-only chunk is dropped again when the client did not ask for it.

A client that disconnects cancels the request's task (``asgi.DisconnectGuard`` on
``http.disconnect`` from uvicorn or Ray's direct ingress, or the server cancelling the ASGI call,
as Ray's proxy does); the caller then closes the engine connection, and the engine aborts.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import Send

from serving.gateway.asgi import dumps, loads
from serving.gateway.engine_client import WIRE_ERRORS, EngineConnectionError
from serving.gateway.errors import ApiError

if TYPE_CHECKING:
    from serving.gateway.upstream import Upstream

DONE = b"data: [DONE]"
ERROR_EVENT = b'data: {"error"'
# A chunk carries a token when a content, reasoning or completion text field is a non-empty string,
# or it starts a tool call; role-only and empty chunks do not count. Searched only until found.
TOKEN = re.compile(rb'"(?:content|reasoning_content|text)": ?"(?!")|"tool_calls": ?\[\{')
REASONING_DELTA = re.compile(rb'"reasoning_content": ?"(?!")')  # a non-empty reasoning delta
ANSWER = re.compile(rb'"(?:content|text)": ?"(?!")|"tool_calls": ?\[\{')  # a token of the answer itself
_CONTENT_KEYS = (b'"content":"', b'"content": "')  # a string follows
_TEXT_KEY = b'"text":'  # /v1/completions
_TOOL_CALLS_KEY = b'"tool_calls":'
REASONING_TEXT = b'"reasoning_content":"'  # the common shape of a REASONING_DELTA: no space
# With neither of these in a run of whole events, REASONING_DELTA's matches are REASONING_TEXT's
REASONING_ODD = (b'"reasoning_content": ', b'"reasoning_content":""')
SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


def has_answer(data: bytes) -> bool:
    """``ANSWER.search(data) is not None``, without the regex: it tries a match at every quote of a
    read (about 10 µs on 15 events of reasoning), while reverse searches for its literals skip
    through (about 3.6 µs for the four).
    A literal found is followed to what comes after it, so an empty string (the role chunk's
    ``"content":""``) is no answer; a found one is nearly always the last occurrence looked at."""
    r = data.rfind
    for key in _CONTENT_KEYS:
        n = len(key)
        i = r(key)
        while i >= 0:
            if data[i + n : i + n + 1] != b'"':
                return True
            i = r(key, 0, i + n - 1)  # the one before (occurrences may overlap by a quote)
    n = len(_TEXT_KEY)
    i = r(_TEXT_KEY)
    while i >= 0:
        j = i + n + (data[i + n : i + n + 1] == b" ")  # after the key and its optional space
        if data[j : j + 1] == b'"' and data[j + 1 : j + 2] != b'"':
            return True
        i = r(_TEXT_KEY, 0, i + n - 1)
    n = len(_TOOL_CALLS_KEY)
    i = r(_TOOL_CALLS_KEY)
    while i >= 0:
        j = i + n + (data[i + n : i + n + 1] == b" ")
        if data[j : j + 2] == b"[{":
            return True
        i = r(_TOOL_CALLS_KEY, 0, i + n - 1)
    return False


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None  # as the engine reported it; None when it did not

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_obj(cls, u: Any) -> Usage:
        if not isinstance(u, dict):
            return cls()
        details = u.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        if reasoning is None:
            reasoning = u.get("reasoning_tokens")  # SGLang also reports it beside the OpenAI place
        return cls(
            int(u.get("prompt_tokens") or 0),
            int(u.get("completion_tokens") or 0),
            int(reasoning) if isinstance(reasoning, int | float) else None,
        )


def reasoning_tokens(usage: Usage, stats: StreamStats) -> int:
    """The engine's count when it reports one; otherwise the reasoning deltas counted while
    relaying a stream (one token each), or the reasoning's share of a whole answer's text."""
    if usage.reasoning_tokens is not None:
        return usage.reasoning_tokens
    return min(stats.reasoning_counted, usage.completion_tokens)


def with_reasoning_tokens(usage: dict[str, Any], tokens: int) -> None:
    """Fill ``completion_tokens_details.reasoning_tokens`` in a client-bound usage object."""
    details = usage.get("completion_tokens_details")
    if not isinstance(details, dict):
        details = usage["completion_tokens_details"] = {}
    details.setdefault("reasoning_tokens", tokens)


@dataclass
class StreamStats:
    """Filled in while relaying; read by the request's finish step."""

    ttft_s: float | None = None  # the first token of any kind (reasoning included)
    ttfa_s: float | None = None  # the first token of the answer (content or a tool call)
    chunks: int = 0  # events passed on (on a read of several, its newline pairs)
    reasoning_counted: int = 0  # reasoning deltas seen (streams), or estimated tokens (whole answers)
    usage: Usage | None = None
    error: str | None = None  # why the stream ended early, if it did
    disconnected: bool = False
    completed: bool = False
    gaps_s: list[float] = field(default_factory=list)


class SseRewriter:
    """Turns upstream SSE bytes into client SSE bytes. Whole events only: a partial event waits
    in ``buf`` for the read that completes it."""

    __slots__ = ("buf", "keep_usage", "markers", "rename", "stats")

    # Bytes that make a read on the general path need a look: the usage object, an error event, the
    # end marker, and a blank event (dropped). Events before the first of them pass through as they are.
    MARKERS = (b'"usage":{', b'"usage": {', ERROR_EVENT, DONE, b"\n\n\n")

    def __init__(self, stats: StreamStats, *, keep_usage: bool, rename_reasoning: bytes | None) -> None:
        self.stats = stats
        self.keep_usage = keep_usage
        self.rename = rename_reasoning  # e.g. b'"reasoning":' for vLLM
        self.markers = self.MARKERS if rename_reasoning is None else (*self.MARKERS, rename_reasoning)
        self.buf = b""

    def feed(self, chunk: bytes) -> bytes:
        """The client-bound bytes for one engine read: whole events only."""
        # Nearly every read is exactly one token chunk, a single-line JSON data event. That is told
        # by its ends and a few reverse searches (the cheapest scans for these literals after
        # single-byte ``find``; JSON strings escape quotes and line breaks, so inside one event each
        # key found is the object's own), and the read passes on as it is.
        end = len(chunk) - 2
        if (not self.buf and chunk.endswith(b"\n\n") and chunk.startswith(b"data: {") and chunk[end - 1] != 13
                and chunk.find(b"\n", 0, end) < 0 and not chunk.startswith(ERROR_EVENT)
                and (self.rename is None or chunk.rfind(self.rename) < 0)):  # fmt: skip
            i = chunk.rfind(b'"usage":') + 8
            if i < 8 or not (chunk[i] == 123 or chunk[i : i + 2] == b" {"):  # no usage object ("{")
                self.stats.chunks += 1
                i = chunk.rfind(b'"reasoning_content":') + 20  # a delta with reasoning text: one token
                if i >= 20:
                    i += chunk[i] == 32
                    self.stats.reasoning_counted += chunk[i] == 34 and chunk[i + 1] != 34
                return chunk
        return self._feed(chunk)

    def _feed(self, chunk: bytes) -> bytes:
        buf = self.buf + chunk if self.buf else chunk
        carry = b""
        if b"\r" in buf:  # CRLF framing: normalise (a read may end between the \r and its \n)
            if buf.endswith(b"\r"):
                buf, carry = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf + carry
            return b""
        while end > 0 and buf[end - 1] == 10:  # a run of newlines: cut after its first two
            end -= 1
        head, self.buf = buf[: end + 2], buf[end + 2 :] + carry
        first = 0 if head[0] == 10 else -1
        if first < 0:
            # which markers the read has at all (reverse searches: fast when absent, as nearly
            # always), then where the first of those is
            for marker in [m for m in self.markers if head.rfind(m) >= 0]:
                i = head.find(marker)
                if first < 0 or i < first:
                    first = i
        if first < 0:  # token events only: passed through as they are
            # no blank event among them (a marker): every event is one newline pair when single-line,
            # as every engine sends them (one newline count is cheaper than a count of pairs)
            self.stats.chunks += head.count(b"\n") // 2
            self._count_reasoning(head)
            return head
        cut = head.rfind(b"\n\n", 0, first + 1)  # the end of the last plain event before the marker
        cut = 0 if cut < 0 else cut + 2
        self.stats.chunks += head.count(b"\n\n", 0, cut)
        self._count_reasoning(head[:cut])
        return head[:cut] + self._emit(head[cut:-2].split(b"\n\n"))

    def _count_reasoning(self, events: bytes) -> None:
        """Reasoning deltas with text in a run of whole events: one literal count in the common
        shape, the regex otherwise."""
        if events.rfind(REASONING_ODD[0]) < 0 and events.rfind(REASONING_ODD[1]) < 0:
            self.stats.reasoning_counted += events.count(REASONING_TEXT)
        else:
            self.stats.reasoning_counted += len(REASONING_DELTA.findall(events))

    def flush(self) -> bytes:
        events, self.buf = [self.buf], b""
        return self._emit(events)

    def _emit(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            ev = event
            if not ev.strip():
                continue
            if b'"usage":{' in ev or b'"usage": {' in ev:
                ev = self._take_usage(ev)
                if not ev:
                    continue
            elif ev.startswith(ERROR_EVENT):
                self.stats.error = "engine reported an error mid-stream"
            elif ev.startswith(DONE):
                if self.stats.error is not None:
                    continue  # never mark a failed stream complete
                self.stats.completed = True
            else:
                self.stats.chunks += 1
            if self.rename is not None and self.rename in ev:
                ev = ev.replace(self.rename, b'"reasoning_content":')
            self._count_reasoning(ev)
            out.append(ev)
            out.append(b"\n\n")
        return b"".join(out)

    def _take_usage(self, ev: bytes) -> bytes:
        try:
            data = loads(ev[ev.index(b"{") :])
        except ValueError:
            return ev
        if not isinstance(data, dict):
            return ev
        usage = data.get("usage")
        self.stats.usage = Usage.from_obj(usage)
        if data.get("choices"):
            self.stats.chunks += 1
        if self.keep_usage:
            if self.stats.usage.reasoning_tokens is None and self.stats.reasoning_counted and isinstance(usage, dict):
                with_reasoning_tokens(usage, reasoning_tokens(self.stats.usage, self.stats))
                return b"data: " + dumps(data)
            return ev
        if not data.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        data.pop("usage", None)
        return b"data: " + dumps(data)


class Relay:
    """Streams one engine response to the client as raw ASGI messages. The caller owns the
    engine connection (closing it) and the request's outcome; a client disconnect arrives here as
    a cancellation (``DisconnectGuard`` or the server)."""

    __slots__ = ("request_id", "rewriter", "t0", "upstream")

    def __init__(self, upstream: Upstream, rewriter: SseRewriter, *, t0: float, request_id: str | None) -> None:
        self.upstream = upstream
        self.rewriter = rewriter
        self.t0 = t0
        self.request_id = request_id

    async def run(self, send: Send, headers: list[tuple[bytes, bytes]], on_last: Callable[[], Any]) -> None:
        """Relay to the end; ``on_last`` runs just before the last body message (from then on a
        disconnect is an ordinary end). The read that carries ``[DONE]`` is that last message, so the
        server writes it and the response's end in one write."""
        stats = self.rewriter.stats
        feed = self.rewriter.feed
        gaps = stats.gaps_s
        clock = time.perf_counter
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunks = self.upstream.chunks
        last = 0.0
        try:
            data = feed(self.upstream.first)
            if data:
                last = clock()
                self._first_tokens(data, last)
            if not stats.completed:
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                async for chunk in chunks:
                    data = feed(chunk)
                    if not data:
                        continue
                    now = clock()
                    if stats.ttfa_s is None:
                        self._first_tokens(data, now)
                    if last:
                        gaps.append(now - last)
                    last = now
                    if stats.completed:  # this read ends the stream ([DONE]): it closes the response
                        break
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                else:  # the engine's body ended: what the rewriter still holds
                    data = self.rewriter.flush()
                    if data and stats.ttfa_s is None:
                        self._first_tokens(data, clock())
                    if data and not stats.completed:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
            if not stats.completed and stats.error is None:
                raise EngineConnectionError("engine closed the stream before [DONE]")
            final = data if stats.completed else b""  # the read that ended the stream, unless already sent
        except WIRE_ERRORS as exc:
            stats.error = str(exc) if isinstance(exc, EngineConnectionError) else f"{type(exc).__name__}: {exc}"
            err = ApiError(502, "engine stream failed before completion; the response is incomplete",
                           code="engine_stream_error")  # fmt: skip
            final = err.sse_event(self.request_id)
        on_last()
        await send({"type": "http.response.body", "body": final, "more_body": False})
        if stats.completed:
            await _drain(chunks)

    def _first_tokens(self, data: bytes, now: float) -> None:
        stats = self.rewriter.stats
        if stats.ttft_s is None and TOKEN.search(data):
            stats.ttft_s = now - self.t0
        if has_answer(data):
            stats.ttfa_s = now - self.t0
            if stats.ttft_s is None:
                stats.ttft_s = stats.ttfa_s


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read an engine response to its end after ``[DONE]`` (its chunked terminator), so its
    connection goes back to the pool; the client's response is already complete."""
    try:
        async for _ in chunks:
            pass
    except WIRE_ERRORS:
        pass  # the connection is dropped on close; the answer was whole
