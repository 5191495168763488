"""The official openai client → gateway (uvicorn) → real llama-server with the shipped model."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest
from gateway_procs import settings_for, wait_until

from serving.engines import get_engine

pytestmark = [pytest.mark.integration, pytest.mark.llama_server]  # needs the llama-server build

MODEL = "smollm2-135m"
KEY = "sk-integration-0123456789"


@pytest.fixture
def gw(llama, serve_gateway):
    return serve_gateway(settings_for(), [llama.endpoint()])


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=120, max_retries=0)


def test_chat_completion_real_text(gw):
    r = client(gw.url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16, temperature=0
    )
    text = r.choices[0].message.content
    assert isinstance(text, str)
    assert text.strip()
    assert r.usage is not None
    assert r.usage.completion_tokens > 0
    assert r.usage.prompt_tokens > 0


def test_chat_stream_with_usage(gw):
    stream = client(gw.url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text.strip()
    assert usage is not None
    assert usage.completion_tokens > 0


def test_chat_stream_without_usage_has_no_usage_chunk(gw):
    chunks = list(client(gw.url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True,
    ))  # fmt: skip
    assert chunks
    assert all(c.usage is None for c in chunks)


def test_completions_and_models(gw):
    c = client(gw.url)
    r = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text.strip()
    assert [m.id for m in c.models.list()] == [MODEL]


def test_error_shapes_through_the_client(gw):
    c = client(gw.url)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as br:
        c.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])  # type: ignore[misc]
    assert br.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    # an engine-side rejection (prompt longer than the context) is a 4xx, not a 5xx
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model=MODEL, prompt="word " * 6000, max_tokens=4)
    assert c.models.list().data  # still answering


def test_auth_through_the_client(llama, serve_gateway):
    gw = serve_gateway(settings_for({"gateway": {"api_keys": {"keys": [KEY]}, "limits": {"requests_per_min": 3}}}),
                       [llama.endpoint()])  # fmt: skip
    with pytest.raises(openai.AuthenticationError):
        client(gw.url).models.list()
    with pytest.raises(openai.AuthenticationError):
        client(gw.url, "sk-wrong").models.list()
    c = client(gw.url, KEY)
    for _ in range(3):
        c.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as rl:
        c.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert int(rl.value.response.headers["retry-after"]) >= 1


def test_client_disconnect_aborts_llamacpp_generation(llama, gw):
    engine = get_engine("llamacpp")

    def processing() -> float:
        return engine.parse_load(httpx.get(llama.url + "/metrics", timeout=5).text).running

    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 3000, "ignore_eos": True, "stream": True}  # fmt: skip
    with httpx.Client(timeout=60) as h, h.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # read by hand: leaving a for-loop early would close the connection
        got = 0
        while got < 5:
            got += next(lines).startswith("data: {")
        wait_until(lambda: processing() >= 1, 30, "llama-server to report the request processing")
    # the client hung up after ~5 of 3000 tokens: the slot must free long before 3000 tokens' time
    wait_until(lambda: processing() == 0, 10, "llama-server to abort the request")
    text = httpx.get(gw.url + "/metrics").text
    assert 'qwen_serve_client_disconnects_total{model="smollm2-135m"} 1.0' in text


def test_whole_answer_is_llamacpps_own_answer(llama, gw):
    """A non-streamed request to llama.cpp is streamed from it and assembled: the client gets the
    object llama-server itself answers (same text, finish reason, token counts, logprobs)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12,
            "temperature": 0, "logprobs": True, "top_logprobs": 2}  # fmt: skip
    own = httpx.post(llama.url + "/v1/chat/completions", json=body, timeout=60).json()
    ours = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert ours["object"] == "chat.completion"
    assert ours["choices"][0]["message"] == own["choices"][0]["message"]
    assert ours["choices"][0]["finish_reason"] == own["choices"][0]["finish_reason"]
    tokens = [(t["token"], t["top_logprobs"][0]["token"]) for t in ours["choices"][0]["logprobs"]["content"]]
    assert tokens == [(t["token"], t["top_logprobs"][0]["token"]) for t in own["choices"][0]["logprobs"]["content"]]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert ours["usage"][key] == own["usage"][key]
    assert set(own) - {"id"} <= set(ours)  # llama.cpp's extras (timings, system_fingerprint) kept
    done = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    own_c = httpx.post(llama.url + "/v1/completions", json=done, timeout=60).json()
    ours_c = httpx.post(gw.url + "/v1/completions", json=done, timeout=60).json()
    assert ours_c["object"] == "text_completion"
    assert ours_c["choices"][0]["text"] == own_c["choices"][0]["text"]
    assert ours_c["usage"]["completion_tokens"] == own_c["usage"]["completion_tokens"]


def test_client_leaving_a_whole_answer_frees_the_llamacpp_slot(llama, gw):
    """A non-streamed request whose client leaves frees its llama.cpp slot within 1 s, while other
    traffic (here: this test's /metrics polls every 0.1 s) keeps llama-server's own non-streamed
    wait from ever noticing the closed connection."""
    engine = get_engine("llamacpp")

    def processing() -> float:
        return engine.parse_load(httpx.get(llama.url + "/metrics", timeout=5).text).running

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
                       "max_tokens": 3000, "ignore_eos": True}).encode()  # fmt: skip
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:  # a client that sends and never reads
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        wait_until(lambda: processing() >= 1, 30, "llama-server to report the request processing")
        time.sleep(1.0)  # generating, as the other requests' traffic goes on
    left = time.perf_counter()
    wait_until(lambda: processing() == 0, 10, "llama-server to free the slot")
    freed_s = time.perf_counter() - left
    print(f"\nllama.cpp non-streamed, client left: slot free {freed_s:.2f} s after the close")
    assert freed_s < 1.0
    counted = 'qwen_serve_client_disconnects_total{model="smollm2-135m"} 1.0'
    wait_until(lambda: counted in httpx.get(gw.url + "/metrics").text, 5, "the gateway to count the disconnect")
