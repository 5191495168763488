"""A whole (non-streamed) answer built from an engine's stream.

Some engines notice that a client left only while they stream to it (``Endpoint.abort_needs_stream``,
llama.cpp: see :class:`serving.engines.llamacpp.LlamaCppEngine`). For them the gateway asks for a
stream even when its client asked for one JSON answer, reads it to the end, and answers with the
object the engine would have sent: a client that leaves meanwhile closes the engine connection
while the engine is still writing to it, and the engine aborts.

Merging, per choice ``index``: string fields of a chat ``delta`` (``content``, the reasoning field)
and of a completion choice (``text``) are concatenated; tool calls are merged by their own
``index`` (``id``/``type`` set once, ``function.name``/``arguments`` concatenated); the lists of a
``logprobs`` object are concatenated; any other field keeps its last non-null value. Top-level
fields (``id``, ``created``, ``usage``, an engine's extras such as llama.cpp's ``timings``) keep
their last non-null value, and ``object`` becomes ``chat.completion``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serving.gateway.asgi import dumps, loads
from serving.gateway.engine_client import WIRE_ERRORS
from serving.gateway.errors import ApiError, from_upstream

if TYPE_CHECKING:
    from serving.gateway.upstream import Upstream

DONE = b"[DONE]"


def upstream_body(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """``body`` as sent to an engine that streams this request (always with usage)."""
    if stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def whole_answer(upstream: Upstream, *, chat: bool) -> bytes:
    """Read ``upstream``'s stream to its end: the whole answer. A broken stream is a 502."""
    asm = AnswerAssembler(chat=chat)
    asm.feed(upstream.first)
    try:
        async for chunk in upstream.chunks:
            asm.feed(chunk)
    except WIRE_ERRORS as exc:
        raise ApiError(502, f"engine stream broke before the answer was complete: {exc}",
                       code="engine_stream_error") from None  # fmt: skip
    return asm.answer()


class AnswerAssembler:
    """Feed it an engine's SSE bytes as they arrive; ``answer()`` is the whole-answer JSON."""

    __slots__ = ("buf", "chat", "choices", "done", "top")

    def __init__(self, *, chat: bool) -> None:
        self.chat = chat
        self.buf = b""
        self.top: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.done = False

    def feed(self, chunk: bytes) -> None:
        buf = (self.buf + chunk).replace(b"\r\n", b"\n") if self.buf or b"\r" in chunk else chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 2 :]
        for event in buf[:end].split(b"\n\n"):
            self._event(event)

    def answer(self) -> bytes:
        """The assembled answer; 502 ``engine_stream_error`` when the stream ended before ``[DONE]``."""
        if self.buf.strip():
            self._event(self.buf)
            self.buf = b""
        if not self.done:
            raise ApiError(502, "engine closed the stream before the answer was complete", code="engine_stream_error")
        out = dict(self.top)
        out["object"] = "chat.completion" if self.chat else "text_completion"
        out["choices"] = [self.choices[i].result() for i in sorted(self.choices)]
        return dumps(out)

    # ---- one event ---------------------------------------------------------------------------
    def _event(self, event: bytes) -> None:
        data = b"".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or self.done:
            return
        if data == DONE:
            self.done = True
            return
        try:
            obj = loads(data)
        except ValueError:
            raise ApiError(502, "engine sent an event that is not JSON", code="engine_stream_error") from None
        if not isinstance(obj, dict):
            return
        if "error" in obj:  # an error after the first byte: nothing was sent yet, so it is the answer
            message = from_upstream(502, data).message
            raise ApiError(502, message, code="engine_stream_error")
        for key, value in obj.items():
            if key == "choices":
                for c in value or ():
                    if isinstance(c, dict):
                        self._choice(c)
            elif key != "object" and (value is not None or key not in self.top):
                self.top[key] = value

    def _choice(self, c: dict[str, Any]) -> None:
        index = int(c.get("index") or 0)
        acc = self.choices.get(index)
        if acc is None:
            acc = self.choices[index] = _Choice(index, self.chat)
        for key, value in c.items():
            if key == "index":
                continue
            if key == "delta" and self.chat:
                acc.delta(value or {})
            elif key == "text" and not self.chat:
                acc.texts.setdefault("text", []).append(value or "")
            elif key == "logprobs" and isinstance(value, dict):
                acc.logprobs(value)
            elif value is not None or key not in acc.fields:
                acc.fields[key] = value


class _Choice:
    """One choice being assembled: strings as lists of parts (joined once), tool calls by index."""

    __slots__ = ("calls", "chat", "fields", "lists", "message", "texts")

    def __init__(self, index: int, chat: bool) -> None:
        self.chat = chat
        self.fields: dict[str, Any] = {"index": index}
        self.message: dict[str, Any] = {"role": "assistant"}
        self.texts: dict[str, list[str]] = {}  # message fields (chat) or "text" (completions)
        self.lists: dict[str, list[Any]] = {}  # the lists of the logprobs object
        self.calls: dict[int, dict[str, Any]] = {}

    def delta(self, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if key == "tool_calls":
                for call in value or ():
                    if isinstance(call, dict):
                        self._call(call)
            elif isinstance(value, str) and key != "role":
                self.texts.setdefault(key, []).append(value)
            elif value is not None:
                self.message[key] = value

    def logprobs(self, value: dict[str, Any]) -> None:
        lp = self.fields.get("logprobs")
        if not isinstance(lp, dict):
            lp = self.fields["logprobs"] = {}
        for key, v in value.items():
            if isinstance(v, list):
                self.lists.setdefault(key, []).extend(v)
            elif v is not None or key not in lp:
                lp[key] = v

    def _call(self, call: dict[str, Any]) -> None:
        i = int(call.get("index") or 0)
        acc = self.calls.setdefault(i, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        for key, value in call.items():
            if key == "index" or value is None:
                continue
            if key == "function" and isinstance(value, dict):
                fn = acc["function"]
                for k, v in value.items():
                    if isinstance(v, str):
                        fn[k] = fn.get(k, "") + v
                    elif v is not None:
                        fn[k] = v
            elif value != "" or not acc.get(key):
                acc[key] = value

    def result(self) -> dict[str, Any]:
        out = dict(self.fields)
        if isinstance(out.get("logprobs"), dict):
            out["logprobs"] = {**out["logprobs"], **self.lists}
        texts = {k: "".join(parts) for k, parts in self.texts.items()}
        if self.chat:
            msg = {**self.message, **texts}
            msg.setdefault("content", None if self.calls else "")
            if self.calls:
                msg["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
            out["message"] = msg
        else:
            out["text"] = texts.get("text", "")
        out.setdefault("finish_reason", None)
        return out
