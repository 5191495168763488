"""Images and thinking through the production path (uvicorn gateway, its engine client,
a real simulator process): images pass to the engine and cost prompt tokens by their size,
limits refuse with a 400 naming the part, reasoning tokens are split out in usage and metrics,
and structured output comes back schema-valid."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from gateway_procs import settings_for

from serving.engines.base import prom_value
from tests.images import data_url, png

pytestmark = pytest.mark.integration

MODEL = "qwen3.6-27b"
SIM = {
    "model": {"preset": MODEL},
    "engine": {"kind": "simulator", "simulator": {"zero_delay": True}},
    "parallelism": {"tp": 2},
    "context_length": 32768,
    "gateway": {"limits": {"max_images": 2, "max_image_pixels": 1024 * 1024, "max_body_bytes": 64 * 1024}},
}


def ask(*parts: dict, **extra: object) -> dict:
    content = [{"type": "text", "text": "what is in the picture?"}, *parts]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}


def image(w: int, h: int, *, noise: bool = False) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(png(w, h, noise=noise))}}


@pytest.fixture
def gw(start_engine, serve_gateway):
    sim = start_engine("sim-0", SIM)
    return serve_gateway(settings_for(SIM), [sim.endpoint()])


def test_images_reach_the_engine_and_cost_prompt_tokens_by_their_size(gw):
    small = httpx.post(gw.url + "/v1/chat/completions", json=ask(image(64, 64)), timeout=30)
    large = httpx.post(gw.url + "/v1/chat/completions", json=ask(image(640, 640)), timeout=30)
    assert small.status_code == 200, small.text
    assert large.status_code == 200, large.text
    # 640² → 400 tokens, 64² → 4: the engine's own count grows by the difference
    grown = large.json()["usage"]["prompt_tokens"] - small.json()["usage"]["prompt_tokens"]
    assert grown == 400 - 4
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert prom_value(metrics, "qwen_serve_images_total") == 2
    assert prom_value(metrics, "qwen_serve_image_prompt_tokens_total") == 404


@pytest.mark.parametrize(
    ("parts", "code", "param"),
    [
        ((image(8, 8), image(8, 8), image(8, 8)), "too_many_images", "messages.0.content.3.image_url"),
        ((image(1100, 1000),), "image_too_large", "messages.0.content.1.image_url"),
        (({"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGEgcG5n"}},), "invalid_image",
         "messages.0.content.1.image_url"),
    ],
)  # fmt: skip
def test_image_limits_refuse_with_a_400_naming_the_part(gw, parts, code, param):
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask(*parts), timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param)


def test_the_body_limit_is_sized_for_images_and_text_keeps_its_own(gw):
    text_only = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}], "max_tokens": 4}
    assert httpx.post(gw.url + "/v1/chat/completions", json=text_only, timeout=30).status_code == 413
    big_image = ask(image(300, 300, noise=True))  # ~ 120 kB of base64, over the 64 kB text limit
    assert len(json.dumps(big_image)) > 64 * 1024
    assert httpx.post(gw.url + "/v1/chat/completions", json=big_image, timeout=30).status_code == 200


def test_reasoning_tokens_are_split_out_in_usage_and_metrics(gw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "think"}], "max_tokens": 40,
            "x_reasoning_tokens": 30}  # fmt: skip
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).json()
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == 30  # the engine's count, the hint honoured
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = [line[6:] for line in httpx.post(gw.url + "/v1/chat/completions", json=stream, timeout=30).text.split("\n")
              if line.startswith("data: {")]  # fmt: skip
    (usage,) = [json.loads(e)["usage"] for e in events if json.loads(e).get("usage")]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 30
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert prom_value(metrics, "qwen_serve_reasoning_tokens_total") == 60
    assert prom_value(metrics, "qwen_serve_answer_tokens_total") == 20
    assert prom_value(metrics, "qwen_serve_reasoning_share_ratio_count") == 2


def test_structured_output_passes_through_and_comes_back_schema_valid(gw):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer",
              "minimum": 1}, "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
              "required": ["city", "population", "tags"]}  # fmt: skip
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a city"}], "max_tokens": 64,
            "chat_template_kwargs": {"enable_thinking": False},
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}}  # fmt: skip
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), schema)
    body["response_format"] = {"type": "json_object"}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
