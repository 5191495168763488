"""The production engine client (``WireEngineClient``) against raw HTTP servers on 127.0.0.1, in
this process: framing, streaming, keep-alive reuse, and every way the wire can break."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme
import uvloop

from serving.gateway import engine_client
from serving.gateway.engine_client import EngineConnectionError, WireEngineClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops: uvloop is what the gateway runs on (its transports differ from asyncio's)."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Engine"], Awaitable[None]]


class Engine:
    """A raw-socket HTTP server whose answer is the test's ``handler``; it counts connections and
    keeps the requests' header blocks."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed = asyncio.Event()  # set when a connection ends from the client's side
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Engine:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
        return await r.readexactly(length)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(r, w, self)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            w.close()


async def echo_keepalive(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
    while True:
        body = await eng.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await w.drain()


def answers_once(raw: bytes, hold_s: float = 0.0) -> Handler:
    """A handler that reads one request, writes ``raw``, and closes the connection ``hold_s`` later."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
        await eng.read_request(r)
        w.write(raw)
        await w.drain()
        await asyncio.sleep(hold_s)

    return handler


async def fetch(wire: WireEngineClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    resp = await wire.post(url, body, {})
    try:
        return resp.status, await resp.read()
    finally:
        await resp.close()


def client(**kw: float) -> WireEngineClient:
    return WireEngineClient(connect_timeout_s=kw.get("connect", 2.0), read_timeout_s=kw.get("read", 5.0),
                            user_agent="qwen-serve-test")  # fmt: skip


@pytest.fixture
async def wire() -> AsyncIterator[WireEngineClient]:
    c = client()
    yield c
    await c.aclose()


async def test_a_whole_answer_is_read_and_its_connection_reused(wire: WireEngineClient) -> None:
    async with Engine(echo_keepalive) as eng:
        for body in (b'{"a":1}', b'{"b":2}', b""):
            resp = await wire.post(eng.url + "/v1/x", body, {"content-type": "application/json"})
            assert resp.status == 200
            assert await resp.read() == body
            await resp.close()
        assert eng.connections == 1
        head = eng.heads[0].decode()
        assert head.startswith("POST /v1/x HTTP/1.1\r\n")
        assert "content-type: application/json\r\n" in head
        assert "user-agent: qwen-serve-test\r\n" in head
        assert f"host: {eng.url.removeprefix('http://')}\r\n" in head


async def test_a_stream_yields_each_chunk_as_the_engine_sends_it(wire: WireEngineClient) -> None:
    go = [asyncio.Event() for _ in range(3)]

    async def stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
        await eng.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
        for i, ev in enumerate(go):
            await ev.wait()  # the next event only after the client has read the previous one
            data = b"data: %d\n\n" % i
            w.write(b"%x\r\n%s\r\n" % (len(data), data))
            await w.drain()
        w.write(b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async with Engine(stream) as eng:
        resp = await wire.post(eng.url + "/s", b"{}", {})
        got = []
        it = resp.chunks().__aiter__()
        for i, ev in enumerate(go):
            ev.set()
            got.append(await asyncio.wait_for(it.__anext__(), 2))
            assert got[-1] == b"data: %d\n\n" % i
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(it.__anext__(), 2)
        await resp.close()
        assert wire._origins[eng.url].idle  # read to its end: back in the pool


async def test_closing_an_unfinished_stream_drops_the_connection(wire: WireEngineClient) -> None:
    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
        await eng.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        await r.read()  # until the client goes: that is the engine's abort signal
        eng.closed.set()

    async with Engine(endless) as eng:
        resp = await wire.post(eng.url + "/s", b"{}", {})
        assert await resp.chunks().__anext__() == b"hello"
        await resp.close()
        await asyncio.wait_for(eng.closed.wait(), 2)
        assert not wire._origins[eng.url].idle


async def test_an_engine_that_dies_mid_body_raises_a_connection_error(wire: WireEngineClient) -> None:
    async with Engine(answers_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")) as eng:
        resp = await wire.post(eng.url + "/s", b"{}", {})
        with pytest.raises(EngineConnectionError, match="before the response ended"):
            async for _ in resp.chunks():
                pass
        resp2 = await wire.post(eng.url + "/s", b"{}", {})
        with pytest.raises(EngineConnectionError):
            await resp2.read()


async def test_an_engine_that_goes_silent_times_out() -> None:
    wire = client(read=0.3)

    stalls = answers_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n", hold_s=10)
    async with Engine(stalls) as eng:
        resp = await wire.post(eng.url + "/s", b"{}", {})
        assert await resp.chunks().__anext__() == b"a"
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(EngineConnectionError, match=r"sent nothing for 0.3 s"):
            await resp.chunks().__anext__()
        assert asyncio.get_running_loop().time() - t0 < 2
    await wire.aclose()


async def test_an_engine_that_never_answers_times_out_before_headers() -> None:
    wire = client(read=0.3)

    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
        await eng.read_request(r)
        await asyncio.sleep(10)

    async with Engine(mute) as eng:
        with pytest.raises(EngineConnectionError, match="sent nothing"):
            await asyncio.wait_for(wire.post(eng.url + "/s", b"{}", {}), 3)
    await wire.aclose()


async def test_a_refused_connection_is_a_connection_error(wire: WireEngineClient) -> None:
    async with Engine(echo_keepalive) as eng:
        url = eng.url
    with pytest.raises(EngineConnectionError, match="cannot connect"):
        await wire.post(url + "/s", b"{}", {})


async def test_a_kept_alive_connection_the_engine_closed_is_replaced_transparently(wire: WireEngineClient) -> None:
    # keep-alive promised, then the connection is closed anyway (an engine's idle timeout racing the reuse)
    async with Engine(answers_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")) as eng:
        for _ in range(3):
            assert await fetch(wire, eng.url + "/s") == (200, b"ok")
        assert eng.connections == 3


async def test_idle_connections_older_than_the_keepalive_are_not_reused(
    wire: WireEngineClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_client, "IDLE_KEEPALIVE_S", 0.05)
    async with Engine(echo_keepalive) as eng:
        for _ in range(2):
            assert await fetch(wire, eng.url + "/s", b"x") == (200, b"x")
            await asyncio.sleep(0.1)
        assert eng.connections == 2


async def test_connection_close_and_unframed_bodies(wire: WireEngineClient) -> None:
    unframed = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nbusy, try later"
    async with Engine(answers_once(unframed)) as eng:
        for _ in range(2):
            assert await fetch(wire, eng.url + "/s") == (503, b"busy, try later")  # framed by the connection's end
        assert eng.connections == 2
        assert not wire._origins[eng.url].idle


async def test_a_malformed_response_is_a_connection_error(wire: WireEngineClient) -> None:
    async with Engine(answers_once(b"SPDY/9 what\r\n\r\n", hold_s=1)) as eng:
        with pytest.raises(EngineConnectionError, match="malformed"):
            await wire.post(eng.url + "/s", b"{}", {})


async def test_a_header_with_a_line_break_is_never_sent(wire: WireEngineClient) -> None:
    async with Engine(echo_keepalive) as eng:
        with pytest.raises(EngineConnectionError, match="line break"):
            await wire.post(eng.url + "/s", b"{}", {"x-request-id": "a\r\nx-evil: 1"})
        assert eng.connections == 0


async def test_cancelling_while_waiting_for_headers_drops_the_connection(wire: WireEngineClient) -> None:
    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter, eng: Engine) -> None:
        await eng.read_request(r)
        await r.read()  # the engine sees its client leave
        eng.closed.set()

    async with Engine(slow) as eng:
        task = asyncio.create_task(wire.post(eng.url + "/s", b"{}", {}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(eng.closed.wait(), 2)


async def test_a_url_that_is_not_http_is_refused(wire: WireEngineClient) -> None:
    with pytest.raises(EngineConnectionError, match="not http"):
        await wire.post("ftp://engine/x", b"", {})


async def test_an_https_engine_is_verified_against_the_trusted_cas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    async with Engine(echo_keepalive, tls) as eng:
        untrusting = client()
        with pytest.raises(EngineConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post(eng.url + "/v1/x", b"{}", {})
        await untrusting.aclose()
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # how an operator trusts a private CA
        wire = client()
        resp = await wire.post(eng.url + "/v1/x", b'{"secure":1}', {})
        assert await resp.read() == b'{"secure":1}'
        await resp.close()
        await wire.aclose()
