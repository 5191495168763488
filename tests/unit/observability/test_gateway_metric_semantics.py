"""What the gateway's latency metrics measure: TTFT is the first chunk carrying a token (not a
role-only chunk), the answer's first token comes after the reasoning, only streams observe TTFT,
non-streaming requests get their own histogram, and the buckets span LLM latencies."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from serving.gateway.relay import ANSWER, TOKEN, Relay, SseRewriter, StreamStats, has_answer
from serving.gateway.upstream import Upstream
from serving.observability.metrics import ITL_BUCKETS_S, LATENCY_BUCKETS_S, GatewayMetrics
from serving.registry import Endpoint

pytestmark = pytest.mark.unit


def _event(delta: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":%s}]}\n\n' % delta.encode()


ROLE_ONLY = _event('{"role":"assistant","content":""}')
REASONING = _event('{"reasoning_content":"Let me think"}')
CONTENT = _event('{"content":"Hello"}')
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("chunk", "token", "answer"),
    [
        (ROLE_ONLY, False, False),
        (_event('{"role":"assistant"}'), False, False),
        (_event('{"content":null,"reasoning_content":""}'), False, False),
        (REASONING, True, False),
        (_event('{"reasoning_content": "spaced"}'), True, False),
        (CONTENT, True, True),
        (_event('{"content":"\\n"}'), True, True),
        (_event('{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}'), True, True),
        (b'data: {"choices":[{"index":0,"text":"x"}]}\n\n', True, True),  # /v1/completions
        (b'data: {"choices":[{"index":0,"text":""}]}\n\n', False, False),
        (_event('{"content": "spaced"}'), True, True),
        (_event('{"tool_calls": [{"index":0}]}'), True, True),
        (b'data: {"choices":[{"index":0,"text": "x"}]}\n\n', True, True),
        (REASONING + _event('{"content":null,"reasoning_content":"more"}'), True, False),
    ],
)
def test_a_token_is_content_reasoning_text_or_a_tool_call_never_a_role_chunk(chunk, token, answer):
    assert bool(TOKEN.search(chunk)) is token
    assert bool(ANSWER.search(chunk)) is answer
    assert has_answer(chunk) is answer


# Pieces that make ANSWER's matches and near misses: its keys with and without the space, empty and
# non-empty strings, a key at the very end of a read, and the keys inside longer ones.
_PIECES = (
    *(b'"content":', b'"content": ', b'"text":', b'"text": ', b'"tool_calls":', b'"tool_calls": '),
    *(b'"', b'""', b"[{", b"[", b"{", b" ", b"null", b"x", b'"reasoning_content":', b'_content":"', b"\n\n"),
)


@pytest.mark.parametrize("seed", range(10))
def test_the_answer_test_without_the_regex_agrees_with_it(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        assert has_answer(data) is (ANSWER.search(data) is not None), data


class _Response:
    closes_at_once = True

    async def close(self) -> None:
        return None


async def _relay(pieces: list[tuple[float, bytes]]) -> StreamStats:
    t0 = time.perf_counter()
    """Relay ``pieces`` (delay before each read, bytes) and return the stats."""

    async def chunks():
        for delay, data in pieces[1:]:
            await asyncio.sleep(delay)
            yield data

    await asyncio.sleep(pieces[0][0])
    up = Upstream(Endpoint("e", "http://e", "m", "sglang"), _Response(), pieces[0][1], chunks())  # type: ignore[arg-type]
    stats = StreamStats()
    relay = Relay(up, SseRewriter(stats, keep_usage=False, rename_reasoning=None), t0=t0, request_id="r")
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    await relay.run(send, [], on_last=lambda: None)
    assert sent[-1]["more_body"] is False  # one message ends the response
    assert all(m["more_body"] for m in sent[1:-1])
    return stats


async def test_ttft_waits_for_the_first_token_not_the_role_chunk_and_the_answer_for_content():
    stats = await _relay([(0.0, ROLE_ONLY), (0.15, REASONING), (0.15, CONTENT), (0.0, DONE)])
    assert stats.ttft_s is not None
    assert stats.ttfa_s is not None
    assert 0.15 <= stats.ttft_s < 0.28, stats.ttft_s  # the reasoning token, not the role chunk at ~0
    assert stats.ttfa_s >= stats.ttft_s + 0.14, (stats.ttft_s, stats.ttfa_s)  # the content token
    assert len(stats.gaps_s) == 3  # gaps between the four reads that produced output


async def test_a_stream_without_tokens_has_no_ttft():
    stats = await _relay([(0.0, ROLE_ONLY), (0.0, DONE)])
    assert stats.ttft_s is None
    assert stats.ttfa_s is None


def test_buckets_fit_llm_latencies():
    assert LATENCY_BUCKETS_S[0] <= 0.005
    assert LATENCY_BUCKETS_S[-1] >= 300  # minutes: long reasoning, long prompts
    assert ITL_BUCKETS_S[0] < 0.001  # sub-millisecond gaps (MTP bursts)
    assert 0.1 <= ITL_BUCKETS_S[-1] <= 10
    assert sum(0.01 <= b <= 0.5 for b in ITL_BUCKETS_S) >= 6  # resolution where decode steps live


def test_every_metric_name_carries_its_unit_or_is_a_count():
    for family in GatewayMetrics().registry.collect():
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_ratio")), family.name
        elif family.type == "gauge":
            assert family.name.endswith(("_in_flight", "_queued")), family.name  # a count of requests
        else:
            assert family.type == "counter", family.name  # exposed as <name>_total


async def test_rejections_are_counted_by_reason_and_spans_name_the_key_never_show_it(make_rig):
    key = "sk-tenant-a-0123456789"
    rig = await make_rig({"gateway": {"limits": {"requests_per_min": 1}, "api_keys": {"keys": [key]}}})
    h = {"authorization": f"Bearer {key}"}
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}
    assert (await rig.client.post("/v1/chat/completions", json=body, headers=h)).status_code == 200
    assert (await rig.client.post("/v1/chat/completions", json=body, headers=h)).status_code == 429
    text = (await rig.client.get("/metrics")).text
    assert 'qwen_serve_admission_rejections_total{reason="rate_limit_exceeded"} 1.0' in text
    (span,) = rig.spans.get_finished_spans()
    assert span.attributes["qwen_serve.api_key_id"].startswith("key-")
    assert all(key not in str(v) for v in span.attributes.values())


def test_the_charts_ttft_slo_choices_are_the_gateways_buckets():
    """The SLO burn rule reads the bucket at the SLO: the chart only offers values that are buckets."""
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[3] / "helm/qwen-serve/values.schema.json").read_text())
    rule = schema["properties"]["monitoring"]["properties"]["prometheusRule"]["properties"]
    assert rule["ttftSlo"]["properties"]["seconds"]["enum"] == list(LATENCY_BUCKETS_S)
