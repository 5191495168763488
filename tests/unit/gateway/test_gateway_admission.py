"""Admission while engines are saturated: a per-model queue in weighted fair order across tenants,
interactive before batch, batch kept below a share of capacity, bounded by size and wait; the
saturation comes from engine load (router + registry), not a fixed in-flight count."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import httpx
import pytest
from gateway_fakes import MODEL, EngineTransport, FakeEngine

from serving.config import load_settings
from serving.gateway import create_app
from serving.gateway.admission import Admission
from serving.gateway.auth import Priority, Tenant
from serving.gateway.errors import ApiError
from serving.gateway.routing import Dispatch, make_router
from serving.observability.metrics import GatewayMetrics
from serving.registry import Endpoint

pytestmark = pytest.mark.unit

A = Tenant("tenant:a", "a", weight=2.0)
B = Tenant("tenant:b", "b", weight=1.0)
NIGHTLY = Tenant("tenant:n", "n", priority=Priority.BATCH)


class Rig:
    def __init__(self, capacity: float = 1.0, **limits: object) -> None:
        s = load_settings(overrides={"gateway": {"limits": limits}}, env={})
        self.ep = Endpoint("e0", "http://e0:1", MODEL, "simulator", capacity=capacity)
        self.router = make_router(s.routing)
        self.admission = Admission(s.gateway.limits, self.router, GatewayMetrics(), self.endpoints)
        self.order: list[str] = []
        self.sent: list[Dispatch] = []

    async def endpoints(self, model: str) -> Sequence[Endpoint]:
        return [self.ep]

    async def request(self, tenant: Tenant) -> None:
        """Admitted → dispatched (counted by the router) → recorded; held until ``finish``."""
        await self.admission.admit(MODEL, tenant, [self.ep])
        self.sent.append(self.router.dispatched(self.ep))
        self.order.append(tenant.name)

    def finish(self) -> None:
        self.router.completed(self.sent.pop(0))
        self.admission.poke()

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0.06)  # > one pump tick


async def test_saturated_engines_serve_tenants_in_weighted_fair_order():
    rig = Rig(capacity=1)
    await rig.request(A)  # fills the engine
    tasks = [asyncio.ensure_future(rig.request(t)) for t in (B, B, B, B, A, A, A, A, A, A)]
    await rig.settle()
    assert rig.order == ["a"]  # saturated: everyone else waits
    for _ in range(8):
        rig.finish()
        await rig.settle()
    # weight 2 : 1 — finish tags a: 0.5, 1, 1.5 …, b: 1, 2 … (ties: who queued first): a gets two
    # turns per b's, though all of b's requests queued first (FIFO would have served b, b, b, b)
    assert rig.order[1:] == ["a", "b", "a", "a", "b", "a", "a", "b"]
    for t in tasks:
        t.cancel()


async def test_interactive_goes_before_batch_and_batch_leaves_headroom():
    rig = Rig(capacity=4, batch_max_load_ratio=0.5)
    batch = [asyncio.ensure_future(rig.request(NIGHTLY)) for _ in range(4)]
    await rig.settle()
    assert rig.order == ["n", "n"]  # batch stops at half the capacity
    await rig.request(A)
    await rig.request(A)  # interactive still gets in, up to the capacity
    assert rig.order == ["n", "n", "a", "a"]
    late = asyncio.ensure_future(rig.request(B))
    await rig.settle()
    rig.finish()
    await rig.settle()
    assert rig.order[-1] == "b"  # the freed slot went to the interactive tenant queued after batch
    for t in [*batch, late]:
        t.cancel()


async def test_queue_past_its_size_is_429_with_retry_after():
    rig = Rig(capacity=1, max_queued=1)
    await rig.request(A)
    held = asyncio.ensure_future(rig.request(B))
    await rig.settle()
    with pytest.raises(ApiError) as e:
        await rig.request(B)
    assert (e.value.status, e.value.code) == (429, "queue_full")
    assert e.value.retry_after_s
    held.cancel()


async def test_wait_past_the_bound_is_503_with_retry_after():
    rig = Rig(capacity=1, max_queue_wait_s=0.2)
    await rig.request(A)
    with pytest.raises(ApiError) as e:
        await rig.request(B)
    assert (e.value.status, e.value.code) == (503, "queue_timeout")
    assert e.value.retry_after_s


async def test_a_client_leaving_the_queue_frees_its_turn():
    rig = Rig(capacity=1)
    await rig.request(A)
    gone = asyncio.ensure_future(rig.request(B))
    stays = asyncio.ensure_future(rig.request(NIGHTLY))
    await rig.settle()
    gone.cancel()
    rig.finish()
    await rig.settle()
    assert rig.order == ["a", "n"]
    stays.cancel()


async def test_saturation_is_read_from_the_engine_load_in_the_registry():
    """The registry says the engine runs at capacity (other gateways' requests): this gateway holds
    its request until the published load falls, then serves it."""

    class Registry:
        def __init__(self) -> None:
            self.ep = Endpoint("engine-a", "http://engine-a:30000", MODEL, "sglang", load=8.0, capacity=8.0)
            self.asked = 0
            self.rereads = asyncio.Event()

        async def endpoints(self) -> Sequence[Endpoint]:
            self.asked += 1
            if self.asked >= 4:  # the queue keeps re-reading the load
                self.rereads.set()
            return [self.ep]

    reg = Registry()
    app = create_app(load_settings(env={}), reg, transport=EngineTransport({"engine-a": FakeEngine("engine-a")}))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        call = asyncio.ensure_future(c.post("/v1/chat/completions", json=chat))
        await asyncio.wait_for(reg.rereads.wait(), 10)
        assert not call.done()
        reg.ep = dataclasses.replace(reg.ep, load=3.0)
        r = await asyncio.wait_for(call, 10)
        assert r.status_code == 200
        text = (await c.get("/metrics")).text
    assert 'qwen_serve_queue_wait_seconds_count{model="smollm2-135m",reason="admission"} 1.0' in text


async def test_a_load_sample_of_this_gateways_own_requests_does_not_hold_the_queue_once_they_end():
    """The registry's load was read while this gateway's request ran (so it is that request): once
    the request ends, the next is let through without waiting for a fresher sample."""
    rig = Rig(capacity=1)
    await rig.request(A)
    rig.ep = dataclasses.replace(rig.ep, load=1.0, load_at=time.time())  # the replica's read, now stale
    queued = asyncio.ensure_future(rig.request(B))
    await rig.settle()
    assert rig.order == ["a"]  # saturated: the engine runs a's request
    rig.finish()
    await rig.settle()
    assert rig.order == ["a", "b"]  # the sample was a's own request, and it ended
    queued.cancel()


async def test_a_load_sample_beyond_this_gateways_own_requests_still_holds_the_queue():
    """Others' requests in the sample (another gateway replica's) keep their slot until a newer
    sample says they ended; this gateway's own ended request frees its slot at once."""
    rig = Rig(capacity=2)
    await rig.request(A)
    rig.ep = dataclasses.replace(rig.ep, load=2.0, load_at=time.time())  # a's request + one of others'
    first = asyncio.ensure_future(rig.request(B))
    await rig.settle()
    assert rig.order == ["a"]
    rig.finish()  # a's ended: its slot is free, the other gateway's request still holds one
    await rig.settle()
    assert rig.order == ["a", "b"]
    second = asyncio.ensure_future(rig.request(B))
    await rig.settle()
    assert rig.order == ["a", "b"]  # b's request + others' one: full
    rig.ep = dataclasses.replace(rig.ep, load=1.0, load_at=time.time())  # only b's: others' ended
    rig.admission.poke()
    await rig.settle()
    assert rig.order == ["a", "b", "b"]
    for t in (first, second):
        t.cancel()
