"""ASGI plumbing of the gateway: what a handler reads from a scope, the request id, the body, the
client's disconnect, JSON in and out, and sending an error. No gateway state lives here."""

from __future__ import annotations

import asyncio
import json
from random import getrandbits
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from serving.gateway.errors import ApiError

JSON_HEADER = (b"content-type", b"application/json")


def loads(raw: bytes) -> Any:
    """JSON → Python; orjson, with the standard library for what orjson refuses (integers past
    64 bits), so the accepted inputs are exactly those the schema validation accepted."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: e.g. an integer past 64 bits
        return json.dumps(obj).encode()


def request_id_of(value: bytes | None) -> str:
    """The client's ``x-request-id`` (printable, at most 128 characters), else a new one."""
    rid = value.decode("latin-1")[:128] if value else None
    if not rid or not rid.isprintable():
        # 32 hex digits, like uuid4().hex, without a system call per request. An id only has to be
        # unique, not unguessable; ``random`` is seeded from the OS, and again in a forked child.
        rid = f"{getrandbits(128):032x}"
    return rid


def route_path(scope: Scope) -> str:
    """The path routes are matched on (``root_path`` removed, as Starlette's router does)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Incoming:
    """What the generation path reads from an ASGI scope: the route path and the headers (the
    first value of each, names in lower-case bytes as ASGI gives them)."""

    __slots__ = ("client", "entered", "headers", "model", "path", "request_id", "responding")

    def __init__(self, path: str, headers: dict[bytes, bytes], request_id: str, client: str | None = None) -> None:
        self.path = path
        self.headers = headers
        self.request_id = request_id
        self.client = client  # the peer's address as the server resolved it (proxy headers included)
        self.model: str | None = None
        self.entered = False  # a ledger entry exists: it records the outcome, errors included
        self.responding = False  # the response has begun (or is about to): no error response any more

    @classmethod
    def of(cls, scope: Scope, request_id: str) -> Incoming:
        headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            if k not in headers:
                headers[k] = v
        peer = scope.get("client")
        return cls(route_path(scope), headers, request_id, str(peer[0]) if peer else None)

    def header(self, name: bytes) -> str | None:
        v = self.headers.get(name)
        return None if v is None else v.decode("latin-1")

    def trace_carrier(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers.items()
                if k in (b"traceparent", b"tracestate")}  # fmt: skip


async def read_body(incoming: Incoming, receive: Receive, cap: int) -> bytes:
    """The whole request body, or 413 past ``cap`` bytes, or :class:`ClientGone`."""
    declared = incoming.header(b"content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"request body larger than {cap} bytes", code="body_too_large")
    chunks, n = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        c = message.get("body", b"")
        n += len(c)
        if n > cap:
            raise ApiError(413, f"request body larger than {cap} bytes", code="body_too_large")
        chunks.append(c)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class DisconnectGuard:
    """Cancels the task serving a request as soon as its client disconnects, at any moment after
    the body was read: queued at the gateway, waiting for the engine's first byte, streaming, or
    waiting for a non-streamed answer. Cancelling closes the engine connection (the handlers'
    ``finally`` blocks), which is how the engine learns to abort.

    A server that cancels the ASGI call itself (Ray's proxy) gives the same outcome. ``done()``
    marks the response complete: a disconnect after it is an ordinary end, not an abort."""

    __slots__ = ("_task", "_watcher", "finished", "tripped")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.tripped = False  # the guard cancelled the task (vs. the server cancelling the call)
        self.finished = False

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not self.finished:
                        self.tripped = True
                        task.cancel()
                    return

        self._watcher = asyncio.ensure_future(watch())

    def done(self) -> None:
        self.finished = True

    def stop(self) -> None:
        self._watcher.cancel()

    def absorb(self) -> bool:
        """In an ``except CancelledError``: True when the guard caused it (the cancel is consumed),
        False when the server cancelled the call (re-raise)."""
        if self.tripped:
            self._task.uncancel()
            return True
        return False


async def send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [JSON_HEADER, (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, err: ApiError, rid: str, id_header: list[tuple[bytes, bytes]]) -> None:
    resp = err.response(rid)
    headers = [(k, v) for k, v in resp.raw_headers if k != b"x-request-id"]
    await send({"type": "http.response.start", "status": resp.status_code, "headers": [*headers, *id_header]})
    await send({"type": "http.response.body", "body": resp.body, "more_body": False})
