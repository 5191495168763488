"""The official openai client → gateway (uvicorn) → real simulator processes (SGLang's API)."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import openai
import pytest
from gateway_procs import settings_for, wait_until

from serving.engines.base import prom_value

pytestmark = pytest.mark.integration

MODEL = "qwen3.6-27b"
SIM = {
    "model": {"preset": MODEL},
    "engine": {"kind": "simulator", "simulator": {"fixed_ttft_s": 0.02, "fixed_tpot_s": 0.02}},
    "memory": {"max_running_requests": 32},
    "parallelism": {"tp": 2},
    "context_length": 32768,
}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=120, max_retries=0)


def stats(url: str) -> dict:
    return httpx.get(url + "/sim/stats", timeout=10).json()


@pytest.fixture
def sim(start_engine):
    return start_engine("sim-0", SIM)


def test_reasoning_content_stream_and_not(sim, serve_gateway):
    gw = serve_gateway(settings_for(SIM), [sim.endpoint()])
    c = client(gw.url)
    msgs = [{"role": "user", "content": "Why is the sky blue?"}]
    r = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=48)
    assert getattr(r.choices[0].message, "reasoning_content", None)
    reasoning, content, usage = "", "", None
    for chunk in c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=48, stream=True,
                                           stream_options={"include_usage": True}):  # fmt: skip
        if chunk.choices:
            reasoning += getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
            content += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert reasoning
    assert usage is not None
    assert usage.completion_tokens > 0
    off = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24,
                                    extra_body={"chat_template_kwargs": {"enable_thinking": False}})  # fmt: skip
    assert not getattr(off.choices[0].message, "reasoning_content", None)
    assert off.choices[0].message.content


def test_client_disconnect_aborts_engine_request(sim, serve_gateway):
    gw = serve_gateway(settings_for(SIM), [sim.endpoint()])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long essay."}],
            "max_tokens": 2000, "ignore_eos": True, "stream": True}  # fmt: skip
    with httpx.Client(timeout=60) as h, h.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # read by hand: leaving a for-loop early would close the connection
        got = 0
        while got < 3:
            got += next(lines).startswith("data: {")
        assert stats(sim.url)["requests"]["aborted"] == 0
    wait_until(lambda: stats(sim.url)["requests"]["aborted"] == 1, 15, "the simulator to record the abort")
    assert prom_value(httpx.get(sim.url + "/metrics").text, "sglang:num_aborted_requests_total") == 1
    assert 'qwen_serve_client_disconnects_total{model="qwen3.6-27b"} 1.0' in httpx.get(gw.url + "/metrics").text


def test_prefix_affinity_keeps_a_multi_turn_conversation_on_one_engine(start_engine, serve_gateway):
    a, b = start_engine("sim-a", SIM), start_engine("sim-b", SIM)
    gw = serve_gateway(settings_for({**SIM, "routing": {"policy": "prefix_affinity"}}), [a.endpoint(), b.endpoint()])
    c = client(gw.url)
    for conv in range(3):
        msgs = [{"role": "system", "content": f"You are assistant #{conv}."},
                {"role": "user", "content": f"Help me plan trip number {conv}."}]  # fmt: skip
        before = (stats(a.url)["requests"]["started"], stats(b.url)["requests"]["started"])
        for turn in range(4):
            r = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8)
            msgs += [{"role": "assistant", "content": r.choices[0].message.content or "ok"},
                     {"role": "user", "content": f"And step {turn}?"}]  # fmt: skip
        after = (stats(a.url)["requests"]["started"], stats(b.url)["requests"]["started"])
        assert sorted(x - y for x, y in zip(after, before, strict=True)) == [0, 4], f"conversation {conv}"


def test_least_outstanding_balances_a_burst(start_engine, serve_gateway):
    a, b = start_engine("sim-a", SIM), start_engine("sim-b", SIM)
    gw = serve_gateway(settings_for(SIM), [a.endpoint(), b.endpoint()])
    c = client(gw.url)

    def one(i: int) -> int:
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}],
                                      max_tokens=40, extra_body={"ignore_eos": True})  # fmt: skip
        return r.usage.completion_tokens if r.usage else 0

    with cf.ThreadPoolExecutor(16) as pool:
        assert all(n > 0 for n in pool.map(one, range(16)))
    counts = [stats(a.url)["requests"]["started"], stats(b.url)["requests"]["started"]]
    assert sum(counts) == 16
    assert abs(counts[0] - counts[1]) <= 4, counts
