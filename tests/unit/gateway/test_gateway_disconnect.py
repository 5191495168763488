"""A client that leaves aborts its engine request at any moment: while the engine has not sent a
byte yet, mid-stream, and while a non-streamed answer is being generated. The app is driven as raw
ASGI so the disconnect can be delivered exactly when the engine is busy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes import MODEL, endpoint

from serving.config import load_settings
from serving.gateway import create_app
from serving.registry import StaticEndpoints

pytestmark = pytest.mark.unit


class StallingEngine(httpx.AsyncBaseTransport):
    """``before_headers``: never answers; otherwise sends ``tokens`` events, then stalls. Records
    whether the gateway gave up on the request (cancelled it or closed the stream)."""

    def __init__(self, *, before_headers: bool, tokens: int = 0) -> None:
        self.before_headers = before_headers
        self.tokens = tokens
        self.busy = asyncio.Event()  # the engine has the request
        self.aborted = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.busy.set()
        if self.before_headers:
            try:
                await asyncio.Event().wait()
            finally:
                self.aborted.set()
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stalling(self))


class _Stalling(httpx.AsyncByteStream):
    def __init__(self, engine: StallingEngine) -> None:
        self.engine = engine

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.engine.tokens):
            yield b'data: {"choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n' % i
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    async def aclose(self) -> None:
        self.engine.aborted.set()


class Client:
    """One raw ASGI request: ``leave()`` delivers ``http.disconnect``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()
        self.gone = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self._first = True

    async def receive(self) -> dict[str, Any]:
        if self._first:
            self._first = False
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.started.set()

    def leave(self) -> None:
        self.gone.set()


def scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": "", "query_string": b"",
            "headers": [(b"content-type", b"application/json")]}  # fmt: skip


async def run_until_left(engine: StallingEngine, stream: bool, wait_for_bytes: bool = False) -> tuple[Client, Any]:
    app = create_app(load_settings(env={}), StaticEndpoints([endpoint("engine-a")]), transport=engine)
    client = Client({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    call = asyncio.ensure_future(app(scope(), client.receive, client.send))
    await asyncio.wait_for(engine.busy.wait(), 5)
    if wait_for_bytes:
        await asyncio.wait_for(client.started.wait(), 5)
    client.leave()
    await asyncio.wait_for(engine.aborted.wait(), 5)
    await asyncio.wait_for(call, 5)
    return client, app


async def test_disconnect_before_the_engine_answers_aborts_the_engine_request():
    engine = StallingEngine(before_headers=True)
    client, app = await run_until_left(engine, stream=True)
    assert engine.aborted.is_set()
    assert client.sent == []  # nobody to answer
    text = app.state.gateway.metrics.render().decode()
    assert 'qwen_serve_client_disconnects_total{model="smollm2-135m"} 1.0' in text
    assert 'status="499"} 1.0' in text
    assert "qwen_serve_requests_in_flight 0.0" in text


async def test_disconnect_while_waiting_for_the_first_token_aborts_the_engine_request():
    engine = StallingEngine(before_headers=False, tokens=0)  # headers sent, no token yet
    client, app = await run_until_left(engine, stream=True)
    assert engine.aborted.is_set()
    assert client.sent == []
    assert 'status="499"} 1.0' in app.state.gateway.metrics.render().decode()


async def test_disconnect_mid_stream_aborts_the_engine_request():
    engine = StallingEngine(before_headers=False, tokens=2)
    client, app = await run_until_left(engine, stream=True, wait_for_bytes=True)
    assert engine.aborted.is_set()
    assert client.sent[0]["status"] == 200
    assert 'status="499"} 1.0' in app.state.gateway.metrics.render().decode()


async def test_disconnect_during_a_non_streamed_answer_aborts_the_engine_request():
    engine = StallingEngine(before_headers=False, tokens=1)  # the whole body never arrives
    client, app = await run_until_left(engine, stream=False)
    assert engine.aborted.is_set()
    assert client.sent == []
    assert 'status="499"} 1.0' in app.state.gateway.metrics.render().decode()


async def test_disconnect_while_queued_at_the_gateway_leaves_the_queue_without_reaching_an_engine():
    class Waking:  # scaled to zero: the request is held in the gateway's cold-start queue
        wakes_from_zero = True

        def __init__(self) -> None:
            self.asked = asyncio.Event()

        async def endpoints(self) -> list:
            self.asked.set()
            return []

    engine = StallingEngine(before_headers=True)
    source = Waking()
    settings = load_settings(overrides={"autoscaling": {"min_replicas": 0}}, env={})
    app = create_app(settings, source, transport=engine)
    client = Client({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    call = asyncio.ensure_future(app(scope(), client.receive, client.send))
    await asyncio.wait_for(source.asked.wait(), 5)
    client.leave()
    await asyncio.wait_for(call, 5)
    assert not engine.busy.is_set()
    assert client.sent == []
    assert 'qwen_serve_requests_queued{reason="cold_start"} 0.0' in app.state.gateway.metrics.render().decode()
