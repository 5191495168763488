"""A whole answer assembled from an engine's stream (engines that abort only while streaming,
llama.cpp): the merge rules, broken streams, and the gateway choosing it per engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_fakes import MODEL, FakeEngine, endpoint

from serving.gateway.assemble import AnswerAssembler
from serving.gateway.errors import ApiError

pytestmark = pytest.mark.unit


def sse(*objs: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(choices: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": MODEL, "choices": choices, **top}


def assemble(raw: bytes, *, chat: bool = True, step: int = 0) -> dict[str, Any]:
    asm = AnswerAssembler(chat=chat)
    for i in range(0, len(raw), step or len(raw)):
        asm.feed(raw[i : i + (step or len(raw))])
    return json.loads(asm.answer())


CHAT = sse(
    chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"reasoning_content": "think"}, "finish_reason": None}], usage=None),
    chunk([{"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"token": "Hel"}]}}]),
    chunk([{"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [{"token": "lo"}]}}]),
    chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    chunk([], usage={"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}, timings={"n": 3}),
)


def test_chat_deltas_become_one_message_with_usage_and_extras():
    answer = assemble(CHAT)
    assert answer["object"] == "chat.completion"
    assert answer["id"] == "c1"
    assert answer["created"] == 5
    (choice,) = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello", "reasoning_content": "think"}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] == {"content": [{"token": "Hel"}, {"token": "lo"}]}
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert answer["timings"] == {"n": 3}  # an engine's own extra field is kept


@pytest.mark.parametrize("step", [1, 7, 50])
def test_reads_split_anywhere_and_crlf_framing_give_the_same_answer(step):
    assert assemble(CHAT, step=step) == assemble(CHAT)
    assert assemble(CHAT.replace(b"\n", b"\r\n"), step=step) == assemble(CHAT)


def test_tool_calls_merge_by_index_and_leave_content_null():
    raw = sse(
        chunk([{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_w", "arguments": ""}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "t", "arguments": "{}"}}]}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    )  # fmt: skip
    msg = assemble(raw)["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_w", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "t", "arguments": "{}"}},
    ]


def test_choices_are_kept_apart_by_index_and_completions_concatenate_text():
    raw = sse(
        {"object": "text_completion", "choices": [{"index": 1, "text": "B", "finish_reason": None}]},
        {"object": "text_completion", "choices": [{"index": 0, "text": "A", "finish_reason": None}]},
        {"object": "text_completion", "choices": [{"index": 0, "text": "a", "finish_reason": "length"}]},
        {"object": "text_completion", "choices": [{"index": 1, "text": "b", "finish_reason": "stop"}]},
    )
    answer = assemble(raw, chat=False)
    assert answer["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, "Aa", "length"),
        (1, "Bb", "stop"),
    ]


def test_a_stream_without_done_or_with_an_error_event_is_a_502():
    cut = CHAT[: CHAT.index(b"data: [DONE]")]
    with pytest.raises(ApiError) as e:
        assemble(cut)
    assert (e.value.status, e.value.code) == (502, "engine_stream_error")
    failed = cut + b'data: {"error": {"code": 500, "message": "decode failed"}}\n\n'
    with pytest.raises(ApiError) as e:
        assemble(failed)
    assert (e.value.status, e.value.code) == (502, "engine_stream_error")
    assert "decode failed" in e.value.message


async def test_gateway_streams_from_an_engine_that_aborts_only_while_streaming(make_rig):
    """llama.cpp's record says so: the engine gets ``stream: true`` (with usage), the client one JSON
    answer; an engine that aborts either way gets the request as the client sent it."""
    engines = [FakeEngine("engine-a"), FakeEngine("engine-b")]
    for kind, engine in (("llamacpp", engines[0]), ("sglang", engines[1])):
        rig = await make_rig(engines=[engine], endpoints=[endpoint(engine.name, kind)])
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        r = await rig.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"]["prompt_tokens"] == 7
        sent = engine.requests[0]
        if kind == "llamacpp":
            assert sent["stream"] is True
            assert sent["stream_options"] == {"include_usage": True}
            assert answer["choices"][0]["message"]["content"] == "t0 t1 t2 "  # the fake's streamed tokens
        else:
            assert not sent.get("stream")
            assert answer["choices"][0]["message"]["content"] == "hello"


async def test_an_engine_dying_mid_assembly_is_a_502_answer(make_rig):
    engine = FakeEngine("engine-a", behaviour="die_midstream")
    rig = await make_rig(engines=[engine], endpoints=[endpoint(engine.name, "llamacpp")])
    r = await rig.client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "engine_stream_error"
