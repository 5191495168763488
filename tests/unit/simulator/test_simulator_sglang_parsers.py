"""Reasoning and tool-call output through SGLang's own qwen3 parser and qwen3_coder detector (when
the unpacked wheel and its parser dependencies are importable), else the built-in path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from serving.engines.simulator import protocol as P
from serving.engines.simulator import sglang_parsers as S
from serving.engines.simulator import text as T

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
WHEEL = os.environ.get("SIM_SGLANG_WHEEL") or str(ROOT / ".cache" / "engines" / "sglang-0.5.23")
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def _req(tool: dict | None, max_new: int) -> P.GenRequest:
    return P.GenRequest(route="chat", rid="r", model="m", stream=True, include_usage=False, prompt_text="x",
                        prompt_tokens=1, max_new=max_new, exact=False, seed=3, thinking=True,
                        separate_reasoning=True, stop=[], tool=tool)  # fmt: skip


def _stream(enc: P.Encoder, out: T.Output, per_step: int = 3) -> list[dict]:
    deltas, i = [], 0
    while i < out.n_tokens:
        j = min(i + per_step, out.n_tokens)
        for ev in enc.step(out, i, j).decode().split("\n\n"):
            if ev.strip():
                deltas.append(json.loads(ev[len("data: ") :])["choices"][0]["delta"])
        i = j
    return deltas


def test_without_the_wheel_the_built_in_path_is_used(tmp_path: Path) -> None:
    assert S.load(None) is None
    assert S.load(str(tmp_path)) is None  # no sglang/srt/parser there


def test_raw_model_text_is_think_tags_and_qwen3_coder_xml_with_one_piece_per_token() -> None:
    out = T.plan_output(max_new=40, exact=False, seed=3, thinking=True, stop=[], tool=TOOL, call_id="c")
    raw = S.raw_pieces(out)
    assert len(raw) == out.n_tokens
    text = "".join(raw)
    assert text.startswith("<think>")
    assert "</think>" in text
    assert "<function=get_weather>" in text
    assert "<parameter=city>\nsim\n</parameter>" in text
    assert text.endswith("</function>\n</tool_call>")


@pytest.fixture(scope="module")
def parsers() -> S.SGLangParsers:
    p = S.load(WHEEL)
    if p is None:
        pytest.skip(f"SGLang's parsers are not importable from {WHEEL} (wheel or its dependencies missing)")
    return p


def test_sglang_reasoning_parser_splits_reasoning_from_content(parsers: S.SGLangParsers) -> None:
    req = _req(None, 12)
    out = T.plan_output(max_new=12, exact=False, seed=3, thinking=True, stop=[], tool=None, call_id="")
    deltas = _stream(P.Encoder(req, parsers, out), out)
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning == out.text(T.REASONING)
    assert content.strip() == out.text(T.CONTENT).strip()
    assert "<think>" not in reasoning + content


def test_sglang_qwen3_coder_detector_streams_the_tool_call(parsers: S.SGLangParsers) -> None:
    req = _req(TOOL, 40)
    out = T.plan_output(max_new=40, exact=False, seed=3, thinking=True, stop=[], tool=TOOL, call_id="call_1")
    enc = P.Encoder(req, parsers, out)
    calls = [c for d in _stream(enc, out) for c in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["id"] == "call_1"
    args = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(args) == json.loads(out.text(T.TOOL_ARGS))  # the built-in path's arguments
    full = P.Encoder(req, parsers, out).full(out, {})["choices"][0]["message"]
    assert json.loads(full["tool_calls"][0]["function"]["arguments"]) == {"city": "sim", "days": 1}
