"""Real vLLM (CPU build) behind the whole stack, driven with the official openai client.

The model has random weights: its text is token soup, but every token is sampled by vLLM, parsed
by vLLM's own ``qwen3`` reasoning parser and relayed by the gateway. What each test proves is in
its docstring. Tests run in file order on one stack; the autoscaling test is last (it may start a
second replica)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.vllm.conftest import SERVED, engine_gauges, token_ids

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

HI = [{"role": "user", "content": "Say hello"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def raw_sse(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The gateway's SSE events as the wire carries them (no SDK model in between)."""
    events = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def poll(cond: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval_s)
    return bool(cond())


def test_models_chat_and_completions(stack):
    """/v1/models lists the served name; a chat completion and a text completion come back from
    vLLM with OpenAI-shaped bodies and usage; in thinking mode (the template opens <think>) vLLM's
    qwen3 parser files the text as reasoning, which reaches the client as ``reasoning_content``."""
    c = client(stack["url"])
    assert [m.id for m in c.models.list().data] == [SERVED]

    chat = c.chat.completions.create(model=SERVED, messages=HI, max_tokens=12, temperature=0.0)
    msg = chat.choices[0].message
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 12
    assert chat.usage.prompt_tokens > 0
    extra = msg.model_extra or {}
    assert isinstance(extra.get("reasoning_content"), str)
    assert extra["reasoning_content"].strip(), msg
    assert "reasoning" not in extra, "vLLM's field name leaked through the gateway"
    assert not msg.content

    comp = c.completions.create(model=SERVED, prompt="Once upon a time", max_tokens=8, temperature=0.0)
    assert comp.choices[0].text.strip()
    assert comp.usage is not None
    assert comp.usage.completion_tokens == 8


def test_streaming_with_and_without_usage(stack):
    """Streams: usage arrives in one final, choice-less chunk only when the client asked for it
    (the gateway always asks vLLM for it, to count tokens); reasoning deltas are renamed."""
    c = client(stack["url"])
    plain = list(c.chat.completions.create(model=SERVED, messages=HI, max_tokens=6, stream=True))
    assert all(ch.usage is None for ch in plain)
    assert (
        sum(1 for ch in plain if ch.choices and (ch.choices[0].delta.model_extra or {}).get("reasoning_content")) >= 3
    )

    counted = list(
        c.chat.completions.create(
            model=SERVED, messages=HI, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert counted[-1].usage is not None
    assert counted[-1].choices == []
    assert counted[-1].usage.completion_tokens == 6
    assert all(ch.usage is None for ch in counted[:-1])

    events = raw_sse(stack["url"], {"model": SERVED, "messages": HI, "max_tokens": 6, "stream": True})
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    assert any("reasoning_content" in d for d in deltas)
    assert not any("reasoning" in d for d in deltas), deltas

    text = list(c.completions.create(model=SERVED, prompt="Once", max_tokens=5, stream=True))
    assert "".join(ch.choices[0].text for ch in text if ch.choices).strip()


def _split(stack: dict[str, str], seed: int, *, stream: bool, thinking: bool = True) -> tuple[str, str, Any]:
    """One request whose sampling favours ``</think>`` (logit_bias +8 ≈ 6 % a step for this
    near-uniform model): reasoning text, content text, usage. Top-k and top-p are switched off
    explicitly: the Qwen presets the gateway fills in (top_k 20) would make the biased token win
    every step, and vLLM drops repeated ``</think>`` — nothing would be left as content."""
    c = client(stack["url"])
    end = token_ids()["</think>"]
    kw: dict[str, Any] = {
        "model": SERVED,
        "messages": HI,
        "max_tokens": 48,
        "temperature": 1.0,
        "seed": seed,
        "logit_bias": {str(end): 8},
        "top_p": 1.0,
        "extra_body": {"chat_template_kwargs": {"enable_thinking": thinking}, "top_k": 0, "min_p": 0.0},
    }
    if not stream:
        r = c.chat.completions.create(**kw)
        m = r.choices[0].message
        return (m.model_extra or {}).get("reasoning_content") or "", m.content or "", r.usage
    reasoning, content, order, usage = "", "", [], None
    for ch in c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        usage = ch.usage or usage
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        r_part = (d.model_extra or {}).get("reasoning_content") or ""
        if r_part:
            order.append("r")
        if d.content:
            order.append("c")
        reasoning += r_part
        content += d.content or ""
    assert order == sorted(order, reverse=True), "a reasoning delta came after content"
    return reasoning, content, usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_think_end_splits_reasoning_from_content(stack, stream):
    """When the model really emits ``</think>`` (made likely with logit_bias, seeded), vLLM's qwen3
    parser ends the reasoning there: text before it arrives as ``reasoning_content``, text after it
    as ``content``, and vLLM counts reasoning tokens below the completion tokens."""
    for seed in range(1, 9):
        reasoning, content, usage = _split(stack, seed, stream=stream)
        if reasoning.strip() and content.strip():
            assert "</think>" not in reasoning + content
            details = usage.completion_tokens_details
            assert details is not None
            assert 0 < details.reasoning_tokens < usage.completion_tokens
            return
    pytest.fail("no seed in 1..8 produced reasoning then content")


def test_enable_thinking_false_turns_reasoning_off(stack):
    """``enable_thinking: false`` reaches vLLM's template (empty think block in the prompt) and its
    parser (starts in content): no reasoning at all, even when ``</think>`` is sampled."""
    for seed in (1, 2, 3):
        for stream in (False, True):
            reasoning, content, usage = _split(stack, seed, stream=stream, thinking=False)
            assert reasoning == ""
            assert content.strip()
            assert usage.completion_tokens_details.reasoning_tokens == 0


def test_tool_definitions_are_accepted(stack):
    """Tools with ``tool_choice: auto`` go through the gateway to vLLM's qwen3_coder tool parser
    (started with --enable-auto-tool-choice) and render in the chat template: 200 and a normal
    answer, streamed and not (the random model does not call them)."""
    c = client(stack["url"])
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    r = c.chat.completions.create(model=SERVED, messages=msgs, tools=tools, tool_choice="auto", max_tokens=8)
    assert r.choices[0].finish_reason in ("length", "stop", "tool_calls")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 60  # the tool schema is in the prompt
    chunks = list(
        c.chat.completions.create(
            model=SERVED, messages=msgs, tools=tools, tool_choice="auto", max_tokens=8, stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_engine_errors_keep_their_status_and_message(stack):
    """vLLM's own 400 (its body has an integer ``code``) reaches the client as an OpenAI-shaped 400
    with vLLM's message and ``param``, and a string code."""
    r = httpx.post(
        stack["url"] + "/v1/chat/completions",
        json={"model": SERVED, "messages": HI, "max_tokens": 8, "logit_bias": {"999999": 5}},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert isinstance(err["code"], str)
    assert err["type"] == "invalid_request_error"
    assert err["message"]


def test_health_and_metrics_paths(stack):
    """The replica health-checks vLLM on /health and reads vllm:num_requests_running/_waiting
    from its real /metrics (the names the engine module declares)."""
    assert httpx.get(stack["engine"] + "/health", timeout=5).status_code == 200
    text = httpx.get(stack["engine"] + "/metrics", timeout=5).text
    assert "vllm:num_requests_running{" in text
    assert "vllm:num_requests_waiting{" in text
    assert engine_gauges(stack["engine"]) == (0.0, 0.0)
    assert httpx.get(stack["url"] + "/ready", timeout=5).status_code == 200


def test_client_disconnect_aborts_the_engine_request(stack):
    """A client that drops a stream mid-way: the gateway closes its engine request and vLLM aborts
    it — its running gauge is back to 0 within 1 s."""
    body = {"model": SERVED, "messages": HI, "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", stack["url"] + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(10):
            next(lines)
        assert engine_gauges(stack["engine"])[0] == 1.0
    t0 = time.monotonic()
    assert poll(lambda: engine_gauges(stack["engine"])[0] == 0.0, timeout_s=1.0), "vLLM still runs the request"
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0
    text = httpx.get(stack["engine"] + "/metrics", timeout=5).text
    assert 'finished_reason="abort"' in text


def test_load_from_vllm_metrics_drives_autoscaling(stack):
    """4 long streams: vLLM's gauges show them, the replica publishes that load (registry), and
    the autoscaler — target 2 per replica, max 2 — starts a second replica."""
    import ray
    from ray import serve

    from serving.registry import registry_actor

    app = stack["app"]
    body = {"model": SERVED, "messages": HI, "max_tokens": 1000, "stream": True, "ignore_eos": True}
    stop = threading.Event()

    def one() -> None:
        while not stop.is_set():
            with httpx.stream("POST", stack["url"] + "/v1/chat/completions", json=body, timeout=120) as r:
                for _ in r.iter_lines():
                    if stop.is_set():
                        return

    workers = [threading.Thread(target=one, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        assert poll(lambda: sum(engine_gauges(stack["engine"])) >= 4, timeout_s=30, interval_s=0.2)

        def published() -> float:
            eps = ray.get(registry_actor().snapshot.remote())
            return max(e["load"] for e in eps if e["url"] == stack["engine"])

        assert poll(lambda: published() >= 3, timeout_s=30, interval_s=0.3), published()

        def scaling() -> bool:
            states = serve.status().applications[app].deployments["EngineReplica"].replica_states
            return sum(states.values()) >= 2

        assert poll(scaling, timeout_s=60, interval_s=0.5), serve.status().applications[app].deployments
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
