"""The gateway app against in-process fake engines: forwarding, streaming rewrite, presets,
errors, retries, tracing, metrics."""

from __future__ import annotations

import json

import pytest
from gateway_fakes import MODEL, FakeEngine, endpoint

pytestmark = pytest.mark.unit

QWEN = {"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "simulator"}}


def chat(stream: bool = False, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


def sse_events(text: str) -> list[str]:
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


async def test_non_stream_chat_is_forwarded_and_answered(make_rig):
    rig = await make_rig()
    r = await rig.client.post("/v1/chat/completions", json=chat(), headers={"x-request-id": "rid-1"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hello"
    assert r.headers["x-request-id"] == "rid-1"
    sent = rig.engines["engine-a"].requests[0]
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert rig.engines["engine-a"].headers[0]["x-request-id"] == "rid-1"


async def test_stream_strips_usage_unless_asked_and_ends_with_done(make_rig):
    rig = await make_rig()
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True))
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert not any(json.loads(e).get("usage") for e in events[:-1])
    # the engine was asked for usage anyway (for metrics and token limits)
    assert rig.engines["engine-a"].requests[0]["stream_options"] == {"include_usage": True}

    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    usage = [json.loads(e)["usage"] for e in sse_events(r.text)[:-1] if json.loads(e).get("usage")]
    # the fake engine reports no reasoning count: the gateway counted its one reasoning delta
    details = {"reasoning_tokens": 1}
    assert usage == [
        {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "completion_tokens_details": details}
    ]


async def test_vllm_reasoning_field_is_renamed(make_rig):
    eng = FakeEngine("engine-v", reasoning_field="reasoning")
    rig = await make_rig(engines=[eng], endpoints=[endpoint("engine-v", engine="vllm")])
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True))
    first = json.loads(sse_events(r.text)[0])
    assert first["choices"][0]["delta"]["reasoning_content"] == "hmm"
    assert "reasoning" not in first["choices"][0]["delta"]
    r = await rig.client.post("/v1/chat/completions", json=chat())
    assert r.json()["choices"][0]["message"]["reasoning_content"] == "hmm"


async def test_thinking_presets_fill_unset_fields_only(make_rig):
    rig = await make_rig(QWEN, endpoints=[endpoint("engine-a", model="qwen3.6-27b")])
    body = {"model": "qwen3.6-27b", "messages": [{"role": "user", "content": "hi"}]}
    assert (await rig.client.post("/v1/chat/completions", json={**body, "top_p": 0.5})).status_code == 200
    sent = rig.engines["engine-a"].requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["top_k"]) == (0.6, 0.5, 20)
    assert sent["chat_template_kwargs"] == {"enable_thinking": True, "preserve_thinking": True}

    off = {**body, "chat_template_kwargs": {"enable_thinking": False}}
    assert (await rig.client.post("/v1/chat/completions", json=off)).status_code == 200
    sent = rig.engines["engine-a"].requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["presence_penalty"]) == (0.7, 0.8, 1.5)
    assert sent["chat_template_kwargs"]["enable_thinking"] is False


async def test_engine_4xx_passes_through_as_4xx(make_rig):
    rig = await make_rig(engines=[FakeEngine("engine-a", behaviour="reject400")])
    r = await rig.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert "maximum context length" in err["message"]
    assert len(rig.engines["engine-a"].requests) == 1  # a judged request is not retried


async def test_retry_once_on_another_engine_before_first_byte(make_rig):
    good = FakeEngine("engine-b")
    bad = FakeEngine("engine-a", behaviour="error503")
    rig = await make_rig(engines=[bad, good], overrides={"routing": {"policy": "round_robin"}})
    for _ in range(4):
        r = await rig.client.post("/v1/chat/completions", json=chat(stream=True))
        assert r.status_code == 200
        assert sse_events(r.text)[-1] == "[DONE]"
    # round robin's turn falls on engine-a first each time (the retry takes the next turn);
    # every one of those was retried once on engine-b and no request hit an engine twice
    assert len(bad.requests) == 4
    assert len(good.requests) == 4
    assert "qwen_serve_upstream_retries_total 4.0" in (await rig.client.get("/metrics")).text


async def test_unreachable_engines_give_503_with_retry_after(make_rig):
    rig = await make_rig(engines=[], endpoints=[endpoint("down-1"), endpoint("down-2")])
    r = await rig.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "engine_unavailable"


async def test_no_endpoints_is_503_and_not_ready(make_rig):
    rig = await make_rig(engines=[], endpoints=[])
    r = await rig.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 503
    assert "retry-after" in r.headers
    assert (await rig.client.get("/ready")).status_code == 503
    assert (await rig.client.get("/health")).status_code == 200


async def test_mid_stream_failure_sends_error_event_and_no_done(make_rig):
    rig = await make_rig(engines=[FakeEngine("engine-a", behaviour="die_midstream")])
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True))
    events = sse_events(r.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "engine_stream_error"
    metrics = (await rig.client.get("/metrics")).text
    assert 'qwen_serve_requests_total{model="smollm2-135m",route="/v1/chat/completions",status="502"} 1.0' in metrics


async def test_models_and_openapi(make_rig):
    rig = await make_rig()
    models = (await rig.client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    doc = (await rig.client.get("/openapi.json")).json()
    ref = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    props = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"top_k", "min_p", "repetition_penalty", "chat_template_kwargs", "separate_reasoning"} <= set(props)
    assert {"/v1/completions", "/v1/models", "/health", "/ready", "/metrics"} <= set(doc["paths"])


async def test_span_per_request_and_traceparent_forwarded(make_rig):
    rig = await make_rig()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True), headers={"traceparent": parent})
    assert r.status_code == 200
    (span,) = rig.spans.get_finished_spans()
    assert span.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert span.attributes["gen_ai.request.model"] == MODEL
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    assert span.attributes["qwen_serve.engine.replica_id"] == "engine-a"
    assert span.attributes["qwen_serve.ttft_s"] >= 0
    sent = rig.engines["engine-a"].headers[0]["traceparent"]
    assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert sent.split("-")[2] == format(span.context.span_id, "016x")


async def test_without_an_exporter_a_request_has_no_span_and_a_callers_trace_still_goes_on(make_rig):
    """Nowhere to export: a request without a caller's trace makes no span and sends the engine no
    traceparent (nothing to join); a caller's trace is still continued and forwarded."""
    rig = await make_rig(exporting=False)
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200
    assert "traceparent" not in rig.engines["engine-a"].headers[0]
    assert rig.spans.get_finished_spans() == ()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await rig.client.post("/v1/chat/completions", json=chat(stream=True), headers={"traceparent": caller})
    assert r.status_code == 200
    sent = rig.engines["engine-a"].headers[1]["traceparent"]
    assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    (span,) = rig.spans.get_finished_spans()  # the caller sampled it: recorded
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    text = (await rig.client.get("/metrics")).text
    assert 'qwen_serve_requests_total{model="smollm2-135m",route="/v1/chat/completions",status="200"} 2.0' in text


async def test_metrics_count_tokens_and_requests(make_rig):
    rig = await make_rig()
    await rig.client.post("/v1/chat/completions", json=chat(stream=True))
    await rig.client.post("/v1/chat/completions", json=chat())
    text = (await rig.client.get("/metrics")).text
    assert 'qwen_serve_completion_tokens_total{model="smollm2-135m"} 4.0' in text
    assert 'qwen_serve_prompt_tokens_total{model="smollm2-135m"} 14.0' in text
    assert 'qwen_serve_requests_total{model="smollm2-135m",route="/v1/chat/completions",status="200"} 2.0' in text
    # TTFT is a streaming metric; the non-streaming request has its own duration histogram
    assert 'qwen_serve_time_to_first_token_seconds_count{model="smollm2-135m"} 1.0' in text
    assert 'qwen_serve_time_to_first_answer_token_seconds_count{model="smollm2-135m"} 1.0' in text
    assert 'qwen_serve_non_streaming_request_duration_seconds_count{model="smollm2-135m",outcome="success"} 1.0' in text
    assert "qwen_serve_requests_in_flight 0.0" in text
