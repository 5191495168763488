"""The official openai client against the running stack: Ray + HAProxy ingress + gateway +
engine replica running the SGLang-compatible simulator (Qwen3.6-27B preset, qwen3 parsers)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.stack import running_stack, stack_settings

pytestmark = pytest.mark.e2e
MODEL = "qwen3.6-27b"


@pytest.fixture(scope="module")
def url():
    s = stack_settings(
        model={"preset": MODEL},
        engine={"kind": "simulator", "simulator": {"zero_delay": True}},
        parallelism={"tp": 1, "gpus_per_node": 1, "gpu_type": "h200", "cpus_per_rank": 0.5},
        memory={"kv_tokens_per_request": 16384},
    )
    with running_stack(s, num_gpus=1) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_non_stream_with_reasoning_and_usage(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=24)
    msg = r.choices[0].message
    assert msg.content
    assert getattr(msg, "reasoning_content", None)  # thinking is on by default, qwen3 parser
    assert r.usage.completion_tokens == 24
    assert r.usage.prompt_tokens > 0


def test_chat_stream_with_usage_chunk(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning
    assert content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_thinking_off_per_request(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert not getattr(r.choices[0].message, "reasoning_content", None)
    assert r.choices[0].message.content


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert r.choices[0].text
    assert r.usage.completion_tokens == 8


def test_tool_call(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
              "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert r.choices[0].finish_reason == "tool_calls"


def test_error_shapes(client, url):
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    assert bad.value.status_code == 400
    raw = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400
    assert raw.json()["error"]["type"]


def test_every_response_carries_one_request_id(url):
    """Generation routes are served ahead of Serve's layers (the gateway sets the id), the others
    behind them (Serve's middleware sets it): either way, exactly one."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    responses = [
        httpx.post(f"{url}/v1/chat/completions", json=body),
        httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}),
        httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}),
        httpx.get(f"{url}/v1/models"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 200]
    assert [len(r.headers.get_list("x-request-id")) for r in responses] == [1, 1, 1, 1]
    mine = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"x-request-id": "caller-id-7"})
    assert mine.headers.get_list("x-request-id") == ["caller-id-7"]


def test_gateway_metrics_have_units(url):
    text = httpx.get(f"{url}/metrics").text
    assert "qwen_serve_time_to_first_token_seconds" in text
    assert "qwen_serve_requests_total" in text


def test_an_image_goes_through_the_whole_stack_and_costs_prompt_tokens(client):
    from tests.images import data_url, png

    def ask(w: int, h: int) -> int:
        r = client.chat.completions.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "what is on this screen?"},
                {"type": "image_url", "image_url": {"url": data_url(png(w, h))}},
            ]}],
        )  # fmt: skip
        assert r.choices[0].message.content
        return r.usage.prompt_tokens

    assert ask(1280, 800) - ask(32, 32) == 40 * 25 - 1  # one token per 32 × 32 pixels
