"""The gateway's HTTP client for engine traffic: one pooled keep-alive client per app.

``WireEngineClient`` is the real one. ``HttpxEngineClient`` runs over any ``httpx`` transport; tests
use it to put in-process fake engines under the gateway (``create_app(..., transport=...)``).

Both raise :class:`EngineConnectionError` for anything that goes wrong on the wire (refused,
reset, timed out, truncated), so the gateway's retry and error mapping see one exception type.
Closing an :class:`EngineResponse` before its body ended drops the connection: that is how a
client disconnect becomes an abort on the engine.

``WireEngineClient``: HTTP/1.1 connections as asyncio protocols, parsed by ``httptools`` (llhttp,
the parser uvicorn serves with). A stream's hot path is one socket read per engine event; here a
read is ``data_received`` → llhttp → ``on_body`` → the waiting relay woken, and a request is one
pre-formatted write. aiohttp, the client before it, cost the gateway 27–51 % more CPU
per request on the same load (its ``StreamReader`` per read; ``ClientRequest``, header multidicts,
timers and trace hooks per request): see serving/gateway/README.md "Hot path". What it does, and
all it does: a byte body to ``http://`` or ``https://`` engines; bodies framed by
``Content-Length``, chunked, or ended by the engine closing the connection; a per-origin LIFO pool
of idle connections, each dropped after ``IDLE_KEEPALIVE_S`` or when the engine closes it; a
connect timeout and a read timeout (the longest wait for the next byte). ``https://`` engines are
verified against the system's CAs; OpenSSL's ``SSL_CERT_FILE`` points it at a private CA's bundle.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
import httpx


class EngineConnectionError(Exception):
    """The engine could not be reached, or the connection broke (before or during the body)."""


# What a body iterator (``EngineResponse.chunks``) may raise when the wire breaks mid-body.
WIRE_ERRORS: tuple[type[BaseException], ...] = (EngineConnectionError, OSError, httpx.HTTPError)


class EngineResponse(Protocol):
    status: int
    # ``close`` never suspends (it only releases or drops the socket): callers need no shield
    # against a cancellation landing half-way through it.
    closes_at_once: bool

    async def read(self) -> bytes:
        """The whole body (non-streamed answers and errors)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one item per socket read (never re-buffered); raises one of
        ``WIRE_ERRORS`` when the connection breaks."""
        ...

    async def close(self) -> None:
        """Release the connection: back to the pool when the body was read to its end, else closed."""
        ...


class EngineClient(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> EngineResponse: ...

    async def aclose(self) -> None: ...


# ---- the production client -------------------------------------------------------------

# Idle connections are dropped after 4 s, before the engines' servers drop them (uvicorn's
# keep-alive is 5 s): a request never goes out on a connection the engine is closing.
IDLE_KEEPALIVE_S = 4.0
MAX_IDLE_PER_ORIGIN = 1024
FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


class _Origin:
    """Where requests for one ``scheme://host:port`` go, and its idle connections."""

    __slots__ = ("host", "host_header", "idle", "port", "ssl")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineConnectionError(f"engine URL {url!r} is not http(s)://host[:port]/...")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.host_header = netloc.encode("ascii") if netloc.isascii() else netloc.encode("idna")
        self.idle: list[_Connection] = []


class _Connection(asyncio.Protocol):
    """One connection; at most one request on it at a time. Parser callbacks fill ``response``."""

    def __init__(self, client: WireEngineClient, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: WireResponse | None = None
        self.idle_since = 0.0
        self.lost = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(EngineConnectionError(f"malformed engine response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.client._forget(self)
        resp = self.response
        if resp is not None and not resp.eof:
            if resp.status and resp.until_close:
                resp._end()  # a body framed by the connection's end
            else:
                why = f"{type(exc).__name__}: {exc}" if exc else "engine closed the connection"
                self._fail(EngineConnectionError(f"{why} before the response ended"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        # a framed body (length or chunked) does not end with the connection; 14 and 17 are those names' lengths
        if self.response is not None and len(name) in (14, 17) and name.lower() in FRAMING_HEADERS:
            self.response.until_close = False

    def on_headers_complete(self) -> None:
        resp = self.response
        if resp is not None:
            resp.status = self.parser.get_status_code()
            resp.last_read = resp.loop.time()
            resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is not None:
            resp.parts.append(body)
            resp.last_read = resp.loop.time()
            resp._wake()

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is not None:
            resp.keep_alive = self.parser.should_keep_alive()
            resp._end()

    # -- ours
    def _fail(self, exc: EngineConnectionError) -> None:
        if self.response is not None and self.response.error is None and not self.response.eof:
            self.response.error = exc
            self.response._wake()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class WireResponse:
    """An engine's response on one :class:`_Connection` (the ``EngineResponse`` protocol)."""

    __slots__ = ("conn", "eof", "error", "keep_alive", "last_read", "loop", "parts", "read_timeout_s",
                 "status", "timer", "until_close", "waiter")  # fmt: skip
    closes_at_once = True

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self.conn = conn
        self.loop = loop
        self.read_timeout_s = read_timeout_s
        self.status = 0
        self.parts: list[bytes] = []
        self.eof = False
        self.error: EngineConnectionError | None = None
        self.keep_alive = False
        self.until_close = True  # no Content-Length, not chunked: the body ends with the connection
        self.waiter: asyncio.Future[None] | None = None
        self.last_read = loop.time()
        self.timer: asyncio.TimerHandle | None = None  # the read-timeout watchdog, armed while waiting

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def _end(self) -> None:
        self.eof = True
        self._wake()

    def _progress(self) -> asyncio.Future[None]:
        """A future the parser's next progress completes (``_wake``); awaiting it is the wait. A
        plain method, not a coroutine: a stream awaits one per engine read. A read timeout is the
        longest wait for the next byte, kept by one watchdog timer per response, not one per wait:
        reads that arrive in time only move ``last_read``, and the watchdog, when it fires, re-arms
        itself from there."""
        self.waiter = w = self.loop.create_future()
        if self.timer is None:
            self.timer = self.loop.call_at(self.last_read + self.read_timeout_s, self._watch)
        return w

    def _watch(self) -> None:
        self.timer = None
        if self.waiter is None or self.eof or self.error is not None:
            return  # not waiting: the next wait arms it again
        due = self.last_read + self.read_timeout_s
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._watch)
            return
        self.error = EngineConnectionError(f"engine sent nothing for {self.read_timeout_s:g} s")
        self.conn.abort()
        self._wake()

    async def headers(self) -> None:
        while not self.status and self.error is None:
            await self._progress()
        if self.error is not None:
            raise self.error

    async def read(self) -> bytes:
        while not self.eof and self.error is None:
            await self._progress()
        if self.error is not None:
            raise self.error
        body = b"".join(self.parts)
        self.parts = []
        return body

    def chunks(self) -> WireResponse:
        return self

    def __aiter__(self) -> WireResponse:
        return self

    async def __anext__(self) -> bytes:
        while True:
            parts = self.parts
            if parts:
                self.parts = []
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if self.error is not None:
                raise self.error
            if self.eof:
                raise StopAsyncIteration
            await self._progress()

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        conn, self.conn.response = self.conn, None
        if self.eof and self.error is None and self.keep_alive and not conn.lost:
            conn.client._park(conn)
        else:
            conn.abort()  # unread body: drop the connection, so the engine aborts the request


class WireEngineClient:
    """The ``EngineClient`` the gateway uses for real engines. Loop-bound: created lazily on first use."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float, user_agent: str) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._fixed = b"user-agent: " + user_agent.encode("latin-1") + b"\r\n"
        self._targets: dict[str, tuple[_Origin, bytes]] = {}  # URL → (origin, request target)
        self._origins: dict[str, _Origin] = {}  # scheme://host:port → origin
        self._busy: set[_Connection] = set()
        self._closed = False

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        hit = self._targets.get(url)
        if hit is None:
            if len(self._targets) > 4096:  # endpoints come and go; never grow without bound
                self._targets.clear()
            parts = urlsplit(url)
            key = f"{parts.scheme}://{parts.netloc}"
            origin = self._origins.get(key)
            if origin is None:
                if len(self._origins) > 4096:  # keep only origins with idle connections
                    self._origins = {k: o for k, o in self._origins.items() if o.idle}
                origin = self._origins[key] = _Origin(key)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            hit = self._targets[url] = (origin, path.encode("latin-1"))
        return hit

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WireResponse:
        if self._closed:
            raise EngineConnectionError("the engine client is closed")
        origin, target = self._target(url)
        head = self._head(target, origin, len(body), headers)
        loop = asyncio.get_running_loop()
        conn = self._idle(origin, loop)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin, loop)
            resp = WireResponse(conn, loop, self.read_timeout_s)
            conn.response = resp
            self._busy.add(conn)
            try:
                assert conn.transport is not None
                conn.transport.writelines((head, body))
                await resp.headers()
                return resp
            except BaseException as exc:  # a wire failure, or cancelled (the client left) before the headers
                conn.abort()
                # a kept-alive connection the engine closed as we reused it: nothing reached the
                # engine's application (no byte came back), so the request goes once more, fresh
                if not (reused and isinstance(exc, EngineConnectionError) and not resp.status):
                    raise
                reused, conn = False, None

    def _head(self, target: bytes, origin: _Origin, length: int, headers: Mapping[str, str]) -> bytes:
        lines = [b"POST ", target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n", self._fixed,
                 b"content-length: ", str(length).encode(), b"\r\n"]  # fmt: skip
        for k, v in headers.items():
            if "\n" in v or "\r" in v or "\n" in k or "\r" in k:
                raise EngineConnectionError(f"header {k!r} has a line break; it cannot be sent")
            if k.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                continue
            lines += (k.encode("latin-1"), b": ", v.encode("latin-1"), b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _idle(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = origin.idle
        now = loop.time()
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing() \
                    and now - conn.idle_since < IDLE_KEEPALIVE_S:  # fmt: skip
                return conn
            conn.abort()
        return None

    async def _connect(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, proto = await loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port, ssl=origin.ssl
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise EngineConnectionError(f"cannot connect to {origin.host}:{origin.port}: "
                                        f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
        return proto

    def _park(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if self._closed or len(conn.origin.idle) >= MAX_IDLE_PER_ORIGIN:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        conn.origin.idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        idle = conn.origin.idle
        if conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.abort()
            origin.idle.clear()
        for conn in list(self._busy):
            conn.abort()
        self._busy.clear()


# ---- httpx (any transport; the unit tests' in-process engines) -------------------------------
class _HttpxResponse:
    __slots__ = ("_resp", "status")
    closes_at_once = False

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise EngineConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise EngineConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxEngineClient:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        user_agent: str,
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            headers={"user-agent": user_agent},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> EngineResponse:
        try:
            req = self._client.build_request("POST", url, content=body, headers=headers)
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise EngineConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self._client.aclose()
