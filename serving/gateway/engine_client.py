"""The gateway's HTTP client for engine traffic: one pooled keep-alive client per app.

``AiohttpEngineClient`` is the real one (aiohttp: C HTTP parser, an O(1) connection pool, reads
straight from the socket buffer). ``HttpxEngineClient`` runs over any ``httpx`` transport; tests
use it to put in-process fake engines under the gateway (``create_app(..., transport=...)``).

Both raise :class:`EngineConnectionError` for anything that goes wrong on the wire (refused,
reset, timed out, truncated), so the gateway's retry and error mapping see one exception type;
a stream's chunk iterator is the library's own, and raises one of ``WIRE_ERRORS``.
Closing an :class:`EngineResponse` before its body ended drops the connection: that is how a
client disconnect becomes an abort on the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx
from yarl import URL


class EngineConnectionError(Exception):
    """The engine could not be reached, or the connection broke (before or during the body)."""


# What a body iterator (``EngineResponse.chunks``) may raise when the wire breaks mid-body. The
# stream's chunks come straight from the client library's own iterator (no wrapping generator per
# chunk on the hot path), so its readers catch these beside EngineConnectionError.
_AIOHTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
WIRE_ERRORS: tuple[type[BaseException], ...] = (EngineConnectionError, *_AIOHTTP_ERRORS, httpx.HTTPError)


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


# ---- aiohttp (production) -------------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_resp", "status")
    closes_at_once = True

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except _AIOHTTP_ERRORS as exc:
            raise EngineConnectionError(f"{type(exc).__name__}: {exc}") from exc

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()  # aiohttp's iterator itself: one await per read

    async def close(self) -> None:
        resp = self._resp
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()  # unread body: drop the connection, so the engine aborts the request


class AiohttpEngineClient:
    """Created on the serving event loop at first use (aiohttp sessions are loop-bound)."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float, user_agent: str) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        # Idle connections are dropped after 4 s, before the engines' servers drop them (uvicorn's
        # keep-alive is 5 s): a request never goes out on a connection the engine is closing.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=4.0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"user-agent": self._user_agent},
            skip_auto_headers=("accept-encoding",),
        )
        return self._session

    def _url(self, url: str) -> URL:
        u = self._urls.get(url)
        if u is None:
            if len(self._urls) > 4096:  # endpoints come and go; never grow without bound
                self._urls.clear()
            u = self._urls[url] = URL(url)
        return u

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> EngineResponse:
        session = self._session or self._open_session()
        try:
            resp = await session.post(self._url(url), data=body, headers=headers, allow_redirects=False)
        except _AIOHTTP_ERRORS as exc:
            raise EngineConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
