"""The ASGI plumbing of the simulator's server: request bodies, plain responses, the route table."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from serving.engines.simulator import protocol as P

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[["Request"], Awaitable[Any]]

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
JSON_HEADERS = [(b"content-type", b"application/json")]


class Routes:
    """Routes as data: ``(path, methods, handler)`` rows; 404 for an unknown path, 405 for a method."""

    def __init__(self, table: list[tuple[str, tuple[str, ...], Handler]]) -> None:
        self._by_key = {(m, path): h for path, methods, h in table for m in methods}
        self._paths = {path for path, _, _ in table}

    def resolve(self, method: str, path: str) -> Handler:
        handler = self._by_key.get((method, path))
        if handler is not None:
            return handler
        if path in self._paths:
            raise P.ApiError(405, f"method {method} not allowed on {path}")
        raise P.ApiError(404, f"no route {path}")


class Request:
    __slots__ = ("receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope, self.receive = scope, receive

    async def body(self) -> bytes:
        parts = []
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                break
            parts.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return b"".join(parts)

    async def json(self) -> Any:
        raw = await self.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise P.ApiError(400, f"the request body is not valid JSON: {e}") from None


async def send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_simple(send: Send, status: int, body: Any) -> None:
    if status >= 400 and isinstance(body, str):
        err = P.ApiError(status, body)
        await send_raw(send, status, JSON_HEADERS, err.body())
    elif isinstance(body, bytes):
        await send_raw(send, status, [(b"content-type", b"text/plain; charset=utf-8")], body)
    elif isinstance(body, tuple):
        ctype, payload = body
        await send_raw(send, status, [(b"content-type", ctype.encode())], payload)
    else:
        await send_raw(send, status, JSON_HEADERS, json.dumps(body).encode())
