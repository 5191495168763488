"""Prefix affinity by estimated wait: the prompt work queued per engine, what each engine probably
caches (block hashes of the conversation), and a cache miss charged on top."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_fakes import MODEL, FakeEngine

from serving.config import load_settings
from serving.gateway.routing import (
    PREFIX_BLOCK_CHARS,
    PrefixAffinityRouter,
    PrefixTracker,
    block_hashes,
    conversation_text,
    make_router,
)
from serving.registry import Endpoint

pytestmark = pytest.mark.unit

SYSTEM = "You are a coding agent. Read files before editing them and run the tests after each change. " * 8


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"r{i}", f"http://e{i}", MODEL, "sglang") for i in range(n)]


def router(**routing: Any) -> PrefixAffinityRouter:
    cfg = load_settings(overrides={"routing": {"policy": "prefix_affinity", **routing}}, env={}).routing
    r = make_router(cfg)
    assert isinstance(r, PrefixAffinityRouter)
    return r


def conversation(c: int, turns: int) -> dict[str, Any]:
    """Conversation ``c`` after ``turns`` answered turns: each adds an answer and a tool result."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"task {c}: " + "fix the parser. " * 40}]
    for t in range(turns):
        msgs += [{"role": "assistant", "content": f"reading module {t}"},
                 {"role": "user", "content": f"[tool result {t}] " + f"line_{t} = compute({c}) " * 30}]  # fmt: skip
    return {"model": MODEL, "messages": msgs}


async def send(r: PrefixAffinityRouter, body: dict[str, Any], endpoints: list[Endpoint], *, answered: bool = True):
    """Route one request; ``answered``: its first byte and end came back (else it stays queued)."""
    ctx = r.context(MODEL, body)
    ep = await r.choose(ctx, endpoints)
    d = r.dispatched(ep, ctx)
    if answered:
        r.first_byte(d)
        r.completed(d)
    return ep, d


def test_an_extended_conversation_shares_every_full_block_of_its_earlier_turn():
    one, two = conversation_text(conversation(0, 1))[0], conversation_text(conversation(0, 2))[0]
    a, b = block_hashes(one), block_hashes(two)
    assert len(a) == len(one) // PREFIX_BLOCK_CHARS
    assert b[: len(a)] == a
    other = block_hashes(conversation_text(conversation(1, 1))[0])
    shared = len(SYSTEM) // PREFIX_BLOCK_CHARS  # the system prompt is common; the tasks differ
    assert other[:shared] == a[:shared]
    assert other[shared + 1] != a[shared + 1]


def test_history_is_the_text_before_the_last_assistant_message():
    body = conversation(0, 2)
    text, history = conversation_text(body)
    earlier, _ = conversation_text({"messages": body["messages"][:-2]})
    assert history == len(earlier)
    assert text.startswith(earlier)
    assert conversation_text(conversation(0, 0))[1] == 0  # a first turn has no history


def test_tracker_matches_leading_blocks_and_forgets_the_least_recently_used():
    t = PrefixTracker(capacity_blocks=4)
    t.insert([1, 2, 3])
    assert t.match([1, 2, 3, 9]) == 3
    assert t.match([9, 1, 2]) == 0
    t.insert([7, 8])  # 5 blocks > 4: block 1 (least recently used) goes
    assert len(t) == 4
    assert t.match([1, 2]) == 0
    assert t.match([7, 8]) == 2


async def test_queued_prefill_counts_uncached_characters_until_the_first_byte():
    r, endpoints = router(), eps(2)
    body = conversation(0, 2)
    ep, d = await send(r, body, endpoints, answered=False)
    chars = len(conversation_text(body)[0])
    assert d.prefill_chars == chars  # nothing sent before: all of it is uncached
    assert r.outstanding.queued_prefill(ep.url) == (1, chars)
    r.first_byte(d)
    assert r.outstanding.queued_prefill(ep.url) == (0, 0)
    assert r.outstanding.get(ep.url) == 1
    r.completed(d)
    r.completed(d)  # idempotent
    assert r.outstanding.get(ep.url) == 0
    _, again = await send(r, body, endpoints, answered=False)
    assert again.prefill_chars < PREFIX_BLOCK_CHARS  # the same prompt again: cached but its last partial block


async def test_a_prompt_counts_as_cached_once_its_first_byte_came_back_and_not_if_it_failed():
    r, endpoints = router(), eps(1)
    body = conversation(0, 0)
    chars = len(conversation_text(body)[0])
    _, first = await send(r, body, endpoints, answered=False)
    _, together = await send(r, body, endpoints, answered=False)  # reaches the engine with it: no hit
    assert first.prefill_chars == together.prefill_chars == chars
    r.completed(together)  # failed before its first byte: its prompt is not presumed cached
    r.first_byte(first)
    _, later = await send(r, body, endpoints, answered=False)
    assert later.prefill_chars < PREFIX_BLOCK_CHARS


async def test_a_burst_of_new_conversations_on_one_system_prompt_is_spread_by_their_prompt_work():
    r, endpoints = router(affinity_max_load_ratio=100.0), eps(4)  # no count limit: the cost model alone

    def first_turn(c: int) -> dict[str, Any]:  # a long shared system prompt, a short task each
        return {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM * 8},
                                             {"role": "user", "content": f"task {c}: fix the parser"}]}  # fmt: skip

    placed = [(await send(r, first_turn(c), endpoints, answered=False))[0].url for c in range(8)]
    assert sorted(placed.count(ep.url) for ep in endpoints) == [2, 2, 2, 2]


async def test_a_conversation_follows_the_engine_that_holds_its_history():
    r, endpoints = router(), eps(4)
    homes = set()
    for turn in range(5):
        ep, _ = await send(r, conversation(0, turn), endpoints)
        homes.add(ep.url)
        for other in range(1, 4):  # other conversations in between, all answered
            await send(r, conversation(other, turn), endpoints)
    assert len(homes) == 1


async def test_a_conversation_moved_off_its_home_engine_stays_where_it_moved():
    r, endpoints = router(affinity_max_load_ratio=100.0), eps(2)
    home, _ = await send(r, conversation(0, 0), endpoints)
    queued = [r.dispatched(home, r.context(MODEL, conversation(c, 6))) for c in range(1, 40)]
    moved, _ = await send(r, conversation(0, 1), endpoints)
    assert moved.url != home.url
    for d in queued:
        r.completed(d)
    for turn in range(2, 5):  # home is idle again, but the history is cached where it moved
        ep, _ = await send(r, conversation(0, turn), endpoints)
        assert ep.url == moved.url


async def test_a_request_leaves_its_engine_when_the_prompt_work_queued_there_outweighs_the_cache_miss():
    r, endpoints = router(affinity_miss_weight=1.0, affinity_max_load_ratio=100.0), eps(2)  # load no object
    home, _ = await send(r, conversation(0, 1), endpoints)
    blocked = []
    for c in range(1, 40):  # long first turns of other conversations, unanswered, on the same engine
        ctx = r.context(MODEL, conversation(c, 6))
        blocked.append(r.dispatched(home, ctx))
    moved = await r.choose(r.context(MODEL, conversation(0, 2)), endpoints)
    assert moved.url != home.url
    for d in blocked:  # their prefill is done (first bytes back), though they still decode
        r.first_byte(d)
    assert r.outstanding.get(home.url) == 39
    stays = await r.choose(r.context(MODEL, conversation(0, 2)), endpoints)
    assert stays.url == home.url


async def test_a_higher_miss_weight_keeps_a_request_on_its_cached_engine_longer():
    async def moves_after(weight: float) -> int:
        r, endpoints = router(affinity_miss_weight=weight, affinity_max_load_ratio=100.0), eps(2)
        home, _ = await send(r, conversation(0, 3), endpoints)
        for n in range(1, 200):
            r.dispatched(home, r.context(MODEL, conversation(100 + n, 0)))
            if (await r.choose(r.context(MODEL, conversation(0, 4)), endpoints)).url != home.url:
                return n
        return 200

    assert await moves_after(0.0) < await moves_after(2.0) < await moves_after(8.0)


async def test_a_gateway_that_never_saw_a_conversation_presumes_its_home_engine_holds_it():
    endpoints = eps(4)
    first = router()
    home, _ = await send(first, conversation(0, 0), endpoints)  # all idle: the rendezvous home
    other = router()  # another gateway replica: serves turn 3 without having seen turns 0-2
    for c, ep in enumerate(endpoints, 1):  # it sent other conversations (the shared system prompt) everywhere
        d = other.dispatched(ep, other.context(MODEL, conversation(c, 0)))
        other.first_byte(d)
        other.completed(d)
    other.dispatched(home, other.context(MODEL, conversation(9, 0)))  # and has prompt work queued on home
    ep = await other.choose(other.context(MODEL, conversation(0, 3)), endpoints)
    assert ep.url == home.url


async def test_a_new_conversation_skips_engines_far_above_the_mean_load():
    r, endpoints = router(affinity_max_load_ratio=1.5), eps(2)
    home = await r.choose(r.context(MODEL, conversation(0, 0)), endpoints)  # where it would go when idle
    for _ in range(10):  # answered prefill, still decoding: no queued prompt work, but many requests
        r.first_byte(r.dispatched(home))
    assert (await r.choose(r.context(MODEL, conversation(0, 0)), endpoints)).url != home.url


async def test_a_conversation_with_history_stays_on_an_engine_that_only_decodes_however_busy():
    r, endpoints = router(affinity_max_load_ratio=1.5), eps(2)
    home, _ = await send(r, conversation(0, 1), endpoints)
    for _ in range(10):  # 10 requests decoding there, none on the other engine: 2× the mean already
        r.first_byte(r.dispatched(home))
    assert (await r.choose(r.context(MODEL, conversation(0, 2)), endpoints)).url == home.url


async def test_the_gateway_clears_queued_prefill_when_each_answer_starts(make_rig):
    a, b = FakeEngine("engine-a"), FakeEngine("engine-b")
    rig = await make_rig({"routing": {"policy": "prefix_affinity"}}, engines=[a, b])
    r = rig.app.gateway.router
    for turn in range(3):
        for stream in (False, True):
            resp = await rig.client.post("/v1/chat/completions", json={**conversation(0, turn), "stream": stream})
            assert resp.status_code == 200
    assert sorted([len(a.requests), len(b.requests)]) == [0, 6]  # one engine holds the conversation
    for ep in rig.app.gateway.router._trackers:
        assert r.outstanding.queued_prefill(ep) == (0, 0)
        assert r.outstanding.get(ep) == 0


class PausingEngine(FakeEngine):
    """Streams its first chunk, then waits for ``go`` (a request in its decode phase)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.first_sent = asyncio.Event()
        self.go = asyncio.Event()

    async def _stream(self, include_usage: bool) -> AsyncIterator[bytes]:
        it = super()._stream(include_usage)
        yield await it.__anext__()
        self.first_sent.set()
        await self.go.wait()
        async for chunk in it:
            yield chunk


async def test_a_streamed_request_leaves_the_queued_prefill_once_its_first_byte_arrives(make_rig):
    engine = PausingEngine("engine-a")
    rig = await make_rig({"routing": {"policy": "prefix_affinity"}}, engines=[engine])
    r = rig.app.gateway.router
    task = asyncio.ensure_future(rig.client.post("/v1/chat/completions", json={**conversation(0, 1), "stream": True}))
    await asyncio.wait_for(engine.first_sent.wait(), 5)
    for _ in range(5):
        await asyncio.sleep(0)  # the gateway reads the chunk
    (ep,) = list(r._trackers)
    assert r.outstanding.get(ep) == 1
    assert r.outstanding.queued_prefill(ep) == (0, 0)
    engine.go.set()
    assert (await task).status_code == 200
    assert r.outstanding.get(ep) == 0
