"""The hot path: open a request on an engine (with one retry before the first byte) and relay
its bytes to the client.

Per streamed read the work is: split on SSE event boundaries, a substring test for the usage
chunk (parsed once per request), an optional bytes rename of the reasoning field, one clock read.
No per-token JSON parsing. The engine is always asked for usage (``stream_options.include_usage``)
so token metrics and limits are exact; the usage chunk is dropped again when the client did not
ask for it. A client that disconnects cancels the relay, which closes the upstream connection —
the engine sees the abort.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from serving.gateway.errors import ApiError
from serving.registry import Endpoint

DONE = b"data: [DONE]"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_obj(cls, u: Any) -> Usage:
        if not isinstance(u, dict):
            return cls()
        return cls(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


@dataclass
class Upstream:
    """An engine response whose status was 200, with its first bytes already read."""

    endpoint: Endpoint
    response: httpx.Response
    chunks: AsyncIterator[bytes]  # the rest of the body, after ``first``
    first: bytes


@dataclass
class StreamStats:
    """Filled in while relaying; read by the request's finish step."""

    ttft_s: float | None = None
    chunks: int = 0
    usage: Usage | None = None
    error: str | None = None  # why the stream ended early, if it did
    disconnected: bool = False
    completed: bool = False
    gaps_s: list[float] = field(default_factory=list)


class SseRewriter:
    """Turns upstream SSE bytes into client SSE bytes, event by event."""

    def __init__(self, stats: StreamStats, *, keep_usage: bool, rename_reasoning: bytes | None) -> None:
        self.stats = stats
        self.keep_usage = keep_usage
        self.rename = rename_reasoning  # e.g. b'"reasoning":' for vLLM
        self.buf = b""

    def feed(self, chunk: bytes) -> bytes:
        self.buf += chunk
        if b"\n\n" not in self.buf:
            return b""
        *events, self.buf = self.buf.replace(b"\r\n", b"\n").split(b"\n\n")
        return self._emit(events)

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
            elif ev.startswith(b'data: {"error"'):
                self.stats.error = "engine reported an error mid-stream"
            elif ev.startswith(DONE):
                if self.stats.error is not None:
                    continue  # never mark a failed stream complete
                self.stats.completed = True
            else:
                self.stats.chunks += 1
            if self.rename is not None and self.rename in ev:
                ev = ev.replace(self.rename, b'"reasoning_content":')
            out.append(ev)
            out.append(b"\n\n")
        return b"".join(out)

    def _take_usage(self, ev: bytes) -> bytes:
        try:
            data = json.loads(ev[ev.index(b"{") :])
        except ValueError:
            return ev
        if not isinstance(data, dict):
            return ev
        self.stats.usage = Usage.from_obj(data.get("usage"))
        if data.get("choices"):
            self.stats.chunks += 1
        if self.keep_usage:
            return ev
        if not data.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        data.pop("usage", None)
        return b"data: " + json.dumps(data, separators=(",", ":")).encode()


class RelayResponse(Response):
    """An SSE response fed from an engine stream; stops (and closes the engine request) as soon
    as the client disconnects. ``on_done`` runs exactly once, whatever happened."""

    media_type = "text/event-stream"

    def __init__(
        self,
        upstream: Upstream,
        rewriter: SseRewriter,
        *,
        t0: float,
        on_done: Callable[[], Any],
        request_id: str | None,
    ) -> None:
        super().__init__(
            status_code=200,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            media_type=self.media_type,
        )
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # streamed: chunked
        self.upstream = upstream
        self.rewriter = rewriter
        self.t0 = t0
        self.on_done = on_done
        self.request_id = request_id
        self.sent_all = False  # set before the last body message: a disconnect after it is normal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.rewriter.stats
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            stats.disconnected = not self.sent_all
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                await self._relay(send)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.response.aclose()  # closing the socket aborts the engine request
                self.on_done()

    async def _relay(self, send: Send) -> None:
        stats = self.rewriter.stats
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last: float | None = None

        async def emit(data: bytes) -> None:
            nonlocal last
            if not data:
                return
            now = time.perf_counter()
            if stats.ttft_s is None:
                stats.ttft_s = now - self.t0
            elif last is not None:
                stats.gaps_s.append(now - last)
            last = now
            await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            await emit(self.rewriter.feed(self.upstream.first))
            async for chunk in self.upstream.chunks:
                await emit(self.rewriter.feed(chunk))
            await emit(self.rewriter.flush())
            if not stats.completed and stats.error is None:
                raise httpx.RemoteProtocolError("engine closed the stream before [DONE]")
        except httpx.HTTPError as exc:
            stats.error = f"{type(exc).__name__}: {exc}"
            err = ApiError(502, "engine stream failed before completion; the response is incomplete",
                           code="engine_stream_error")  # fmt: skip
            await send({"type": "http.response.body", "body": err.sse_event(self.request_id), "more_body": True})
        self.sent_all = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
