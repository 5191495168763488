"""Scale to zero: while no engine is registered, a gateway whose endpoint source can wake the
engine deployment holds requests (bounded in number and time) and serves them once an engine
appears; past either bound it answers 503 + Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import httpx
import pytest
from gateway_fakes import MODEL, EngineTransport, FakeEngine, endpoint

from serving.config import load_settings
from serving.gateway import create_app
from serving.registry import Endpoint

pytestmark = pytest.mark.unit

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


class Waking:
    """An endpoint source that can wake its engines: empty until ``ready()``."""

    wakes_from_zero = True

    def __init__(self) -> None:
        self.live: list[Endpoint] = []
        self.asked = asyncio.Event()  # a held request has looked for an engine

    async def endpoints(self) -> Sequence[Endpoint]:
        if not self.live:
            self.asked.set()
        return self.live

    def ready(self) -> None:
        self.live = [endpoint("engine-a")]


def client_for(source: Waking, **limits: object) -> tuple[httpx.AsyncClient, object]:
    overrides = {"autoscaling": {"min_replicas": 0, "cold_start_wait_s": limits.pop("wait_s", 30)},
                 "gateway": {"limits": limits}}  # fmt: skip
    app = create_app(load_settings(overrides=overrides, env={}), source,
                     transport=EngineTransport({"engine-a": FakeEngine("engine-a")}), rng=random.Random(1))  # fmt: skip
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30), app


async def test_requests_sent_while_scaled_to_zero_are_served_once_an_engine_is_ready():
    source = Waking()
    client, _ = client_for(source)
    calls = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT)) for _ in range(3)]
    await asyncio.wait_for(source.asked.wait(), 5)
    source.ready()
    answers = await asyncio.gather(*calls)
    assert [r.status_code for r in answers] == [200, 200, 200]
    text = (await client.get("/metrics")).text
    assert 'qwen_serve_queue_wait_seconds_count{model="smollm2-135m",reason="cold_start"} 3.0' in text
    assert 'qwen_serve_requests_queued{reason="cold_start"} 0.0' in text


async def test_a_cold_start_longer_than_the_wait_is_503_with_retry_after():
    client, _ = client_for(Waking(), wait_s=0.3)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_engine"
    assert int(r.headers["retry-after"]) >= 1


async def test_requests_past_the_queue_bound_are_503_at_once():
    source = Waking()
    client, _ = client_for(source, max_queued=1)
    held = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await asyncio.wait_for(source.asked.wait(), 5)
    refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503
    assert "retry-after" in refused.headers
    source.ready()
    assert (await held).status_code == 200


async def test_without_scale_to_zero_no_engine_is_503_at_once():
    source = Waking()
    app = create_app(load_settings(env={}), source)  # min_replicas=1: an empty registry is an outage
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
