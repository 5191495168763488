"""The real simulator process on 127.0.0.1: routes, shapes, errors, abort, multi-node, fault knobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import openai
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

KEY = "test-key"
BASE_ARGV = [
    "--model-path",
    "Qwen/Qwen3.6-27B",
    "--served-model-name",
    "qwen3.6-27b",
    "--host",
    "127.0.0.1",
    "--reasoning-parser",
    "qwen3",
    "--tool-call-parser",
    "qwen3_coder",
    "--context-length",
    "4096",
    "--speculative-algorithm",
    "NEXTN",
    "--speculative-num-steps",
    "3",
    "--speculative-eagle-topk",
    "1",
    "--speculative-num-draft-tokens",
    "4",
    "--enable-metrics",
    "--enable-cache-report",
    "--sim-gpu",
    "h200",
    "--sim-preset",
    "qwen3.6-27b",
]


class Sim:
    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "serving.engines.simulator", *BASE_ARGV, "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def wait_for(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status(url: str, timeout: float = 5) -> int:
    return httpx.get(url, timeout=timeout).status_code


def started(sim: Sim, expect: int = 200) -> Sim:
    def up() -> bool:
        if sim.proc.poll() is not None:
            raise AssertionError(f"simulator exited: {sim.proc.stderr.read().decode() if sim.proc.stderr else ''}")
        return status(sim.base + "/health") == expect

    wait_for(up, 60, f"{sim.base}/health == {expect}")
    return sim


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = started(Sim("--api-key", KEY, "--sim-time-scale", "0.01"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(sim: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base + "/v1", api_key=KEY, max_retries=0, timeout=30)


def post(sim: Sim, path: str, body: object, key: str | None = KEY) -> httpx.Response:
    h = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(sim.base + path, json=body, headers=h, timeout=30)


MSG = [{"role": "user", "content": "Hello there, simulator."}]


def test_chat_non_stream_shape_with_reasoning(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="qwen3.6-27b", messages=MSG, max_tokens=12)  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.model == "qwen3.6-27b"
    assert r.id
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert c.message.role == "assistant"
    assert getattr(c.message, "reasoning_content", None)
    assert c.message.content
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens is not None


def test_thinking_off_and_inline_reasoning(sim: Sim) -> None:
    off = post(
        sim,
        "/v1/chat/completions",
        {"messages": MSG, "max_tokens": 6, "chat_template_kwargs": {"enable_thinking": False}},
    ).json()
    assert "reasoning_content" not in off["choices"][0]["message"]
    inline = post(sim, "/v1/chat/completions", {"messages": MSG, "max_tokens": 6, "separate_reasoning": False}).json()
    msg = inline["choices"][0]["message"]
    assert "reasoning_content" not in msg
    assert msg["content"].startswith("<think>")
    assert "</think>" in msg["content"]


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="qwen3.6-27b",
            messages=MSG,
            max_tokens=10,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [
        c
        for c in chunks
        if c.choices and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))
    ]
    # One event per scheduler step (SGLang's shape): MTP accepts ~2.8 tokens per verify step, so
    # the 10 tokens (usage below) come in fewer events. Was "one event per token" before issue 14.2.
    assert 1 < len(body) < 10
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10


def _short_stream(sim: Sim) -> AbstractContextManager[httpx.Response]:
    """A 3-token chat stream."""
    body = {"messages": MSG, "max_tokens": 3, "stream": True}
    return httpx.stream("POST", sim.base + "/v1/chat/completions", json=body,
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip


def test_stream_ends_with_done_and_no_usage_without_include_usage(sim: Sim) -> None:
    with _short_stream(sim) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(ln[6:]) or json.loads(ln[6:])["usage"] is None for ln in lines[:-1])


def test_first_body_bytes_come_after_the_prefill_with_the_role_and_the_first_token(sim: Sim) -> None:
    """SGLang emits the role chunk with the first output, so the first byte marks the prefill's end
    (the gateway's prefix affinity counts a request's prompt as queued until then)."""
    with _short_stream(sim) as r:
        first = next(r.iter_raw())
    events = [json.loads(e[6:]) for e in first.decode().split("\n\n") if e.startswith("data: ")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "reasoning_content": None}
    tokens = [e for e in events[1:] if any(e["choices"][0]["delta"].get(k) for k in ("content", "reasoning_content"))]
    assert tokens  # the prefill's token came in the same read


def test_tool_call_required_and_named(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    r = client.chat.completions.create(
        model="qwen3.6-27b",
        messages=MSG,
        tools=tools,
        tool_choice="required",  # type: ignore[arg-type]
        max_tokens=64,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.tool_calls
    call = c.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}
    stream = client.chat.completions.create(
        model="qwen3.6-27b",
        messages=MSG,
        tools=tools,
        max_tokens=64,
        stream=True,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    name, args, finish = None, "", None
    for ch in stream:
        if ch.choices and ch.choices[0].delta.tool_calls:
            tc = ch.choices[0].delta.tool_calls[0]
            name = name or (tc.function.name if tc.function else None)
            args += (tc.function.arguments or "") if tc.function else ""
        if ch.choices and ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    assert name == "get_weather"
    assert json.loads(args) == {"city": "sim"}
    assert finish == "tool_calls"


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model="qwen3.6-27b", prompt="Once upon a time", max_tokens=5)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage
    assert r.usage.completion_tokens == 5
    texts = [
        c.choices[0].text
        for c in client.completions.create(model="qwen3.6-27b", prompt="x", max_tokens=4, stream=True)
        if c.choices
    ]
    # one event per scheduler step (MTP: several tokens per step), every token in some event
    assert 1 < len([t for t in texts if t]) < 4
    assert len("".join(texts).split()) == 4


def test_models_and_server_info(sim: Sim) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    models = httpx.get(sim.base + "/v1/models", headers=h).json()
    assert models["data"][0]["id"] == "qwen3.6-27b"
    assert httpx.get(sim.base + "/server_info", headers=h).json()["tp_size"] == 1
    assert post(sim, "/flush_cache", {}).status_code == 200


def test_api_key(sim: Sim) -> None:
    r = post(sim, "/v1/chat/completions", {"messages": MSG}, key=None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401
    assert post(sim, "/v1/chat/completions", {"messages": MSG}, key="wrong").status_code == 401
    assert status(sim.base + "/health") == 200
    assert status(sim.base + "/ready") == 200
    assert status(sim.base + "/metrics") == 200


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"messages": [{"role": "user", "content": "x" * 20000}]}, 400, "messages"),
        ({"messages": MSG, "max_tokens": 5000}, 400, "max_tokens"),
        ({}, 400, "messages"),
        ({"messages": "hi"}, 400, "messages"),
        ({"messages": MSG, "max_tokens": "ten"}, 400, "max_tokens"),
        ({"messages": MSG, "n": 2}, 400, "n"),
        ({"messages": MSG, "model": "gpt-4"}, 404, "model"),
    ],
)
def test_bad_requests(sim: Sim, body: dict[str, object], code: int, param: str) -> None:
    r = post(sim, "/v1/chat/completions", body)
    assert r.status_code == code
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param
    assert err["message"]


def test_invalid_json_is_400(sim: Sim) -> None:
    r = httpx.post(sim.base + "/v1/completions", content=b"{nope", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_prefix_cache_hits_for_shared_leading_messages(sim: Sim) -> None:
    system = {"role": "system", "content": "You are a helpful assistant. " * 100}
    a = post(sim, "/v1/chat/completions", {"messages": [system, {"role": "user", "content": "a"}], "max_tokens": 2})
    b = post(sim, "/v1/chat/completions", {"messages": [system, {"role": "user", "content": "b"}], "max_tokens": 2})
    cached = b.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert a.status_code == 200
    assert cached >= 600
    stats = httpx.get(sim.base + "/sim/stats", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert stats["prefix_cache"]["hits"] >= 1


def test_metrics_names(sim: Sim) -> None:
    post(sim, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2, "stream": True})
    text = httpx.get(sim.base + "/metrics").text
    for name in [
        "num_running_reqs",
        "num_queue_reqs",
        "token_usage",
        "mamba_usage",
        "gen_throughput",
        "cache_hit_rate",
        "spec_accept_length",
        "spec_accept_rate",
        "prompt_tokens_total",
        "generation_tokens_total",
        "num_aborted_requests_total",
        "time_to_first_token_seconds_bucket",
        "inter_token_latency_seconds_bucket",
        "e2e_request_latency_seconds_bucket",
        "queue_time_seconds_bucket",
    ]:
        assert f"\nsglang:{name}{{" in text, name


def test_retractions_are_exported_under_sglangs_counter(sim: Sim) -> None:
    text = httpx.get(sim.base + "/metrics").text
    stats = httpx.get(sim.base + "/sim/stats", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert _prom(text, "sglang:num_retracted_requests_total") == stats["scheduler"]["retracted"]


def _prom(text: str, name: str) -> float:
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + "{"))


def test_abort_on_client_disconnect_and_fixed_timing() -> None:
    s = started(Sim("--sim-fixed-ttft-s", "0.2", "--sim-fixed-tpot-s", "0.02"))
    try:
        body = {"messages": MSG, "max_tokens": 2000, "stream": True, "chat_template_kwargs": {"enable_thinking": False}}
        t0 = time.monotonic()
        with httpx.stream("POST", s.base + "/v1/chat/completions", json=body, timeout=30) as r:
            got = 0
            for line in r.iter_lines():
                if '"content"' in line and '"content":""' not in line:
                    got += 1
                    if got == 1:
                        ttft = time.monotonic() - t0
                    if got == 11:
                        span = time.monotonic() - t0 - ttft
                        break
        assert 0.18 < ttft < 1.0
        assert 0.15 < span < 1.0

        def aborted() -> bool:
            return bool(httpx.get(s.base + "/sim/stats").json()["requests"]["aborted"] == 1)

        wait_for(aborted, 10, "the disconnect to be recorded")
        stats = httpx.get(s.base + "/sim/stats").json()
        assert stats["requests"]["client_disconnects"] == 1
        assert stats["requests"]["active"] == 0
        assert stats["tokens"]["streamed"] < 2000
        assert _prom(httpx.get(s.base + "/metrics").text, "sglang:num_aborted_requests_total") == 1
    finally:
        s.stop()


def test_two_rank_instance() -> None:
    dist = f"127.0.0.1:{free_port()}"
    multi = ["--nnodes", "2", "--dist-init-addr", dist, "--sim-heartbeat-s", "0.2"]
    r0 = started(Sim(*multi, "--node-rank", "0"), expect=503)
    r1 = None
    try:
        assert status(r0.base + "/ready") == 503
        assert status(r0.base + "/health_generate") == 503
        assert post(r0, "/v1/chat/completions", {"messages": MSG}, key=None).status_code == 503
        r1 = Sim(*multi, "--node-rank", "1")
        wait_for(lambda: status(r0.base + "/health") == 200, 30, "rank 0 healthy after rank 1 joined")
        assert status(r0.base + "/ready") == 200
        assert post(r0, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2}, key=None).status_code == 200
        r1.proc.send_signal(signal.SIGKILL)
        r1.proc.wait(10)
        wait_for(lambda: status(r0.base + "/health") == 503, 30, "rank 0 unhealthy after rank 1 died")
        assert "rank 1 lost" in httpx.get(r0.base + "/health").json()["error"]["message"]
        assert httpx.get(r0.base + "/sim/stats").json()["ranks"]["lost"] == [1]
        # a replacement rank is not accepted: the instance is replaced as a whole
        r1 = Sim(*multi, "--node-rank", "1")
        time.sleep(1.0)
        assert status(r0.base + "/health") == 503
    finally:
        r0.stop()
        if r1 is not None:
            r1.proc.wait(15)  # a follower exits on its own when rank 0 goes away
            assert r1.proc.returncode is not None


def test_fault_crash_after_tokens() -> None:
    s = started(Sim("--sim-zero-delay", "--sim-crash-after-tokens", "25"))
    try:

        def three_streams() -> None:
            for _ in range(3):
                post(s, "/v1/chat/completions", {"messages": MSG, "max_tokens": 10, "stream": True}, key=None)

        with pytest.raises(httpx.HTTPError):
            three_streams()  # 30 tokens: the process dies in the third
        assert s.proc.wait(10) != 0
    finally:
        s.stop()


def test_fault_hang_after_s() -> None:
    s = started(Sim("--sim-hang-after-s", "1.5"))
    try:
        wait_for(lambda: s.proc.poll() is None and _times_out(s.base + "/health"), 20, "the hang")
        assert s.proc.poll() is None
        s.proc.terminate()  # SIGTERM still ends a hung simulator
        assert s.proc.wait(10) != 0
    finally:
        s.stop()


def _times_out(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TimeoutException:
        return True
    return False


def test_stream_sends_one_event_per_scheduler_step_and_usage_counts_every_token() -> None:
    s = started(Sim("--sim-time-scale", "0.01", "--sim-mtp-accept-length", "3"))
    try:
        body = {
            "messages": MSG,
            "max_tokens": 31,
            "stream": True,
            "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"enable_thinking": False},  # one field: no reasoning/content split
        }
        with httpx.stream("POST", s.base + "/v1/chat/completions", json=body, timeout=30) as r:
            events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"] and e["choices"][0]["finish_reason"] is None]
        text = [d.get("reasoning_content") or d.get("content") for d in deltas if d.get("role") is None]
        # prefill yields 1 token, then every verify step 3 (accept length 3): 1 + 10 × 3 = 31 tokens
        assert len(text) == 11
        assert events[-1]["usage"]["completion_tokens"] == 31
        words = sum(len(t.split()) for t in text if t)
        assert words == 31  # every filler token is a word: each chunk carries all of its step's tokens
    finally:
        s.stop()


def test_hung_scheduler_fails_health_while_http_answers() -> None:
    s = started(Sim("--sim-hang-scheduler-after-s", "1", "--sim-health-timeout-s", "1"))
    try:
        wait_for(lambda: status(s.base + "/health") == 503, 20, "/health to fail")
        assert status(s.base + "/health_generate") == 503
        assert status(s.base + "/ready") == 200  # HTTP itself still answers
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_fault_slow_start_and_fail_health() -> None:
    slow = started(Sim("--sim-slow-start-s", "2"), expect=503)
    bad = started(Sim("--sim-fail-health"), expect=503)
    try:
        assert status(slow.base + "/ready") == 503
        wait_for(lambda: status(slow.base + "/health") == 200, 20, "the slow start to end")
        assert status(bad.base + "/ready") == 200
        assert status(bad.base + "/health_generate") == 503
        assert post(bad, "/v1/completions", {"prompt": "x", "max_tokens": 1}, key=None).status_code == 200
    finally:
        slow.stop()
        bad.stop()


@pytest.mark.skipif(os.environ.get("CI_SKIP_SLOW") == "1", reason="skipped on request")
def test_model_timing_queues_beyond_capacity() -> None:
    s = started(Sim("--max-running-requests", "1", "--sim-time-scale", "0.05"))
    try:
        import threading

        def one() -> None:
            post(s, "/v1/chat/completions", {"messages": MSG, "max_tokens": 300, "ignore_eos": True}, key=None)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(
            lambda: (
                "sglang:num_queue_reqs" in (m := httpx.get(s.base + "/metrics").text)
                and _prom(m, "sglang:num_queue_reqs") >= 1
            ),
            20,
            "a queued request",
        )
        assert _prom(httpx.get(s.base + "/metrics").text, "sglang:num_running_reqs") <= 1
        for t in threads:
            t.join(60)
    finally:
        s.stop()
