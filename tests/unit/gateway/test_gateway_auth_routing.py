"""API keys, per-key limits, keys never in logs; routing policies."""

from __future__ import annotations

import dataclasses
import io
import logging

import pytest
from gateway_fakes import MODEL, FakeEngine

from serving.config import RoutingPolicy, load_settings
from serving.gateway import create_app
from serving.gateway.auth import RateLimiter
from serving.gateway.errors import ApiError
from serving.gateway.routing import HISTORY_S, ROUTERS, Outstanding, RequestContext, history_s, make_router
from serving.observability.logging import configure_logging
from serving.registry import Endpoint, StaticEndpoints

pytestmark = pytest.mark.unit

KEY = "sk-test-abcdef0123456789-secret"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_missing_wrong_and_right_key(make_rig, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text("# one per line\nsk-from-file-0001\n")
    rig = await make_rig(
        {"gateway": {"api_keys": {"file": str(keyfile)}}},
        env={"QWEN_SERVE_GATEWAY__API_KEYS__KEYS": f'["{KEY}"]'},
    )
    r = await rig.client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    r = await rig.client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401
    assert (await rig.client.get("/v1/models", headers={"authorization": "Basic abc"})).status_code == 401
    for key in (KEY, "sk-from-file-0001"):
        r = await rig.client.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
    assert (await rig.client.get("/health")).status_code == 200  # probes stay open
    assert "authorization" not in rig.engines["engine-a"].headers[0]  # the client key is not forwarded


async def test_requests_per_minute_limit_gives_429_with_retry_after(make_rig):
    rig = await make_rig({"gateway": {"limits": {"requests_per_min": 2}, "api_keys": {"keys": [KEY]}}})
    h = {"authorization": f"Bearer {KEY}"}
    assert [(await rig.client.post("/v1/chat/completions", json=BODY, headers=h)).status_code for _ in range(2)] == [
        200,
        200,
    ]
    r = await rig.client.post("/v1/chat/completions", json=BODY, headers=h)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 30


def test_token_bucket_settles_usage_and_refills():
    now = [0.0]
    rl = RateLimiter(load_settings(overrides={"gateway": {"limits": {"tokens_per_min": 600}}}, env={}).gateway.limits,
                     clock=lambda: now[0])  # fmt: skip
    rl.admit("k", 100)
    rl.settle("k", 100, 600)  # the engine said 600 were used: the bucket is now empty
    with pytest.raises(ApiError) as exc:
        rl.admit("k", 50)
    assert exc.value.status == 429
    assert exc.value.retry_after_s == pytest.approx(5.0)  # 50 tokens at 10 tokens/s
    now[0] = 6.0
    rl.admit("k", 50)


async def test_no_key_in_any_log_line(make_rig):
    stream = io.StringIO()
    handler = configure_logging("DEBUG", json_logs=True, stream=stream)
    try:
        rig = await make_rig({"gateway": {"api_keys": {"keys": [KEY]}}})
        for auth in (f"Bearer {KEY}", "Bearer sk-wrong-key-987654", None):
            h = {"authorization": auth} if auth else {}
            await rig.client.post("/v1/chat/completions", json=BODY, headers=h)
            await rig.client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=h)
        logging.getLogger("test").info("client sent Authorization: Bearer %s", KEY)  # scrubbed too
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert '"request_id"' in text
    assert "/v1/chat/completions" in text
    assert KEY not in text
    assert "sk-wrong-key-987654" not in text


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"r{i}", f"http://e{i}", MODEL, "sglang") for i in range(n)]


def test_every_policy_is_registered():
    assert set(ROUTERS) == set(RoutingPolicy)


async def test_prefix_affinity_keeps_a_conversation_on_one_engine():
    cfg = load_settings(overrides={"routing": {"policy": "prefix_affinity"}}, env={}).routing
    router = make_router(cfg, Outstanding())
    endpoints = eps(4)
    chosen = {(await router.choose(RequestContext(MODEL, prefix="system:be brief\nuser:plan a trip"), endpoints)).url
              for _ in range(20)}  # fmt: skip
    assert len(chosen) == 1
    spread = {(await router.choose(RequestContext(MODEL, prefix=f"user:q{i}"), endpoints)).url for i in range(40)}
    assert len(spread) >= 3  # different conversations spread out


async def test_prefix_affinity_spills_over_when_affine_engine_is_overloaded():
    cfg = load_settings(overrides={"routing": {"policy": "prefix_affinity"}}, env={}).routing
    out = Outstanding()
    router = make_router(cfg, out)
    endpoints = eps(2)
    ctx = RequestContext(MODEL, prefix="user:same")
    home = await router.choose(ctx, endpoints)
    for _ in range(10):
        out.inc(home.url)
    assert (await router.choose(ctx, endpoints)).url != home.url


async def test_least_outstanding_balances_a_burst():
    cfg = load_settings(env={}).routing
    out = Outstanding()
    router = make_router(cfg, out)
    endpoints = eps(2)
    for _ in range(20):
        out.inc((await router.choose(RequestContext(MODEL), endpoints)).url)
    assert out.get("http://e0") == out.get("http://e1") == 10


async def test_session_affinity_by_header_and_round_robin():
    cfg = load_settings(overrides={"routing": {"policy": "session_affinity"}}, env={}).routing
    router = make_router(cfg, Outstanding())
    endpoints = eps(3)
    picks = {(await router.choose(RequestContext(MODEL, session="abc"), endpoints)).url for _ in range(10)}
    assert len(picks) == 1
    rr = make_router(load_settings(overrides={"routing": {"policy": "round_robin"}}, env={}).routing, Outstanding())
    assert [(await rr.choose(RequestContext(MODEL), endpoints)).url for _ in range(6)] == [
        "http://e0", "http://e1", "http://e2", "http://e0", "http://e1", "http://e2",
    ]  # fmt: skip


async def test_gateway_routes_a_conversation_to_one_engine(make_rig):
    a, b = FakeEngine("engine-a"), FakeEngine("engine-b")
    rig = await make_rig({"routing": {"policy": "prefix_affinity"}}, engines=[a, b])
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Plan a trip to Lyon."}]
    for turn in range(4):
        r = await rig.client.post("/v1/chat/completions", json={"model": MODEL, "messages": msgs})
        assert r.status_code == 200
        msgs = [*msgs, {"role": "assistant", "content": "ok"}, {"role": "user", "content": f"more {turn}"}]
    assert sorted([len(a.requests), len(b.requests)]) == [0, 4]


async def test_with_auth_off_each_client_address_has_its_own_limits(make_rig):
    """No keys: limits apply per client address, never to one bucket everybody shares."""
    import httpx

    rig = await make_rig({"gateway": {"limits": {"requests_per_min": 2}}})

    def client_at(host: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=rig.app, client=(host, 5000)), base_url="http://g")

    async with client_at("10.0.0.1") as a, client_at("10.0.0.2") as b:
        first = [(await a.post("/v1/chat/completions", json=BODY)).status_code for _ in range(3)]
        other = [(await b.post("/v1/chat/completions", json=BODY)).status_code for _ in range(2)]
    assert first == [200, 200, 429]  # the limit holds for one address
    assert other == [200, 200]  # and a second address is not charged for the first's requests


def test_limit_buckets_of_departed_identities_are_dropped_when_full():
    """Client addresses come and go: the bucket table stays bounded, and only buckets that are
    full again (the same as a new one) are dropped."""
    now = [0.0]
    limits = load_settings(overrides={"gateway": {"limits": {"requests_per_min": 60}}}, env={}).gateway.limits
    rl = RateLimiter(limits, clock=lambda: now[0])
    rl.MAX_BUCKETS = 8
    for i in range(8):
        rl.admit(f"client:{i}", 1)
    now[0] = 2.0  # everyone's bucket has refilled its one request
    rl.admit("client:busy", 1)
    assert set(rl._req) == {"client:busy"}
    for i in range(7):
        rl.admit(f"client:new{i}", 1)
    rl.admit("client:late", 1)  # the table is full again and nobody has refilled: nothing dropped
    assert "client:busy" in rl._req
    assert len(rl._req) == 9


def test_an_engine_load_sample_counts_only_what_others_had_there_at_its_time():
    now = [100.0]
    out = Outstanding(clock=lambda: now[0])
    for _ in range(3):
        out.inc("http://e0")
    ep = Endpoint("e0", "http://e0", MODEL, "sglang", load=5.0, load_at=101.0, capacity=8)
    now[0] = 102.0
    for _ in range(3):
        out.dec("http://e0")  # this gateway's three ended after the sample
    assert out.load(ep) == 2.0  # the sample's five less this gateway's three then
    out.inc("http://e0")
    assert out.load(ep) == 3.0
    untimed = dataclasses.replace(ep, load_at=0.0)  # a load without a time is all others'
    assert out.load(untimed) == 6.0


def test_the_outstanding_history_stays_bounded_and_forgets_engines_that_left():
    now = [0.0]
    out = Outstanding(clock=lambda: now[0])
    for _ in range(10_000):
        now[0] += 0.01
        out.inc("http://e0")
        out.dec("http://e0")
    assert len(out._history["http://e0"]) <= 2 * HISTORY_S / 0.01 + 2  # ten seconds of changes
    old = Endpoint("e0", "http://e0", MODEL, "sglang", load=1.0, load_at=now[0] - 50, capacity=8)
    assert out.load(old) == 1.0  # older than the history: the count at its start (0) is subtracted
    now[0] += 2 * HISTORY_S
    out.inc("http://e1")  # any change prunes idle engines' history
    assert "http://e0" not in out._history


def test_the_outstanding_history_outlasts_a_slow_publish_interval():
    assert history_s(2.0) == HISTORY_S  # the default interval: the floor
    now = [0.0]
    out = Outstanding(clock=lambda: now[0], history=history_s(30.0))
    for _ in range(4):
        out.inc("http://e0")
    sample = Endpoint("e0", "http://e0", MODEL, "sglang", load=4.0, load_at=1.0, capacity=8)  # only ours
    now[0] = 40.0
    for _ in range(4):
        out.dec("http://e0")
    now[0] = 60.0  # a sample a publish interval and a late publish old
    out.inc("http://e1")
    assert out.load(sample) == 0.0  # ours, gone since: the engine is free for us
    slow = load_settings(overrides={"autoscaling": {"metrics_interval_s": 30.0}}, env={})
    assert create_app(slow, StaticEndpoints([])).state.gateway.router.outstanding.history == history_s(30.0)
