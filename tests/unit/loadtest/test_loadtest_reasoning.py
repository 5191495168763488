"""Reasoning vs answer, request by request and per level: first answer token, token split and its
source, answer throughput, $/M answer tokens, and the report that carries them."""

import json

import pytest

from loadtest.cost import token_cost
from loadtest.records import RequestRecord
from loadtest.report import build_report, write_report
from loadtest.runmeta import RECORDS, RUN_META, LevelWindow, RunMeta
from loadtest.sse import read_stream
from loadtest.stats import Slo, summarize
from tests.unit.loadtest.test_loadtest_sse import data, delta, feed

pytestmark = pytest.mark.unit


def usage(completion, reasoning=None, prompt=9):
    u = {"prompt_tokens": prompt, "completion_tokens": completion}
    if reasoning is not None:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return data({"choices": [], "usage": u})


DONE = b"data: [DONE]\n"


def test_first_answer_token_is_the_first_content_delta_not_the_first_reasoning_delta():
    readline, clock = feed(
        [
            (0.05, delta(role="assistant", content="")),  # the empty role chunk is no token
            (0.10, delta(reasoning_content="let")),
            (0.20, delta(reasoning_content=" me think")),
            (0.50, delta(content="Yes")),
            (0.60, delta(content=".")),
            (0.61, usage(4, reasoning=2)),
            (0.62, DONE),
        ]
    )
    t = read_stream(readline, 0.0, clock)
    assert t.ttft_s == pytest.approx(0.10)
    assert t.ttfa_s == pytest.approx(0.50)
    assert t.itl_s == pytest.approx([0.10, 0.30, 0.10])  # gaps between chunks, reasoning ones included
    assert (t.reasoning_events, t.answer_events) == (2, 2)


def test_vllm_reasoning_field_counts_as_reasoning_too():
    readline, clock = feed([(0.1, delta(reasoning="hm")), (0.3, delta(content="ok")), (0.4, DONE)])
    t = read_stream(readline, 0.0, clock)
    assert (t.ttft_s, t.ttfa_s) == (pytest.approx(0.1), pytest.approx(0.3))
    assert (t.reasoning_tokens, t.answer_tokens) == (1, 1)


def test_no_answer_token_means_no_time_to_first_answer():
    readline, clock = feed([(0.1, delta(reasoning_content="hm")), (0.2, usage(1, reasoning=1)), (0.3, DONE)])
    t = read_stream(readline, 0.0, clock)
    assert t.ttft_s == pytest.approx(0.1)
    assert t.ttfa_s is None


def test_reasoning_tokens_come_from_usage_when_the_server_reports_them():
    # The server says 7 of 10 tokens were reasoning, though only 2 of 4 chunks carried reasoning.
    readline, clock = feed(
        [
            (0.1, delta(reasoning_content="a b c")),
            (0.2, delta(reasoning_content="d e f g")),
            (0.3, delta(content="h i")),
            (0.4, delta(content="j")),
            (0.5, usage(10, reasoning=7)),
            (0.6, DONE),
        ]
    )
    t = read_stream(readline, 0.0, clock)
    assert t.reasoning_tokens_source == "usage"
    assert (t.reasoning_tokens, t.answer_tokens) == (7, 3)


def test_reasoning_tokens_are_counted_deltas_when_usage_has_no_split():
    # One token per chunk (chunks = completion_tokens) and no completion_tokens_details.
    readline, clock = feed(
        [
            (0.1, delta(reasoning_content="a")),
            (0.2, delta(reasoning_content="b")),
            (0.3, delta(reasoning_content="c")),
            (0.4, delta(content="d")),
            (0.5, usage(4)),
            (0.6, DONE),
        ]
    )
    t = read_stream(readline, 0.0, clock)
    assert t.reasoning_tokens_source == "deltas"
    assert (t.reasoning_tokens, t.answer_tokens) == (3, 1)


def test_multi_token_chunks_without_a_split_share_usage_by_text_length():
    # 12 tokens in 3 chunks: counting chunks would say 2 reasoning tokens; the text says 3/4 of 12.
    readline, clock = feed(
        [
            (0.1, delta(reasoning_content="x" * 15)),
            (0.2, delta(reasoning_content="y" * 15)),
            (0.3, delta(content="z" * 10)),
            (0.4, usage(12)),
            (0.5, DONE),
        ]
    )
    t = read_stream(readline, 0.0, clock)
    assert t.reasoning_tokens_source == "chars"
    assert (t.reasoning_tokens, t.answer_tokens) == (9, 3)


def test_tool_call_text_counts_as_answer_in_the_text_share():
    call = {"index": 0, "function": {"name": "run", "arguments": "y" * 9}}
    readline, clock = feed(
        [
            (0.1, delta(reasoning_content="x" * 12)),
            (0.2, delta(tool_calls=[call])),
            (0.3, usage(8)),
            (0.4, DONE),
        ]
    )
    t = read_stream(readline, 0.0, clock)
    assert t.reasoning_tokens_source == "chars"
    assert (t.reasoning_tokens, t.answer_tokens) == (4, 4)  # 12 of 24 characters were reasoning
    assert t.ttfa_s is None  # a tool call is no content token


def test_thinking_off_stream_is_all_answer():
    readline, clock = feed([(0.1, delta(content="a")), (0.2, delta(content="b")), (0.3, usage(2)), (0.4, DONE)])
    t = read_stream(readline, 0.0, clock)
    assert t.ttfa_s == t.ttft_s == pytest.approx(0.1)
    assert (t.reasoning_tokens, t.answer_tokens) == (0, 2)


def rec(ttft, ttfa, reasoning, answer, *, warmup=False):
    return RequestRecord(
        start_ts=0.0,
        scenario="s",
        load=2.0,
        status=200,
        ok=True,
        e2e_s=1.0,
        ttft_s=ttft,
        ttfa_s=ttfa,
        tpot_s=0.01,
        completion_tokens=reasoning + answer,
        reasoning_tokens=reasoning,
        answer_tokens=answer,
        reasoning_tokens_source="usage",
        thinking=reasoning > 0,
        warmup=warmup,
    )


def test_summary_gives_answer_throughput_beside_output_and_first_answer_percentiles():
    records = [rec(0.1, 0.5, 30, 10), rec(0.1, 0.1, 0, 20), rec(0.1, 0.9, 50, 10), rec(9, 9, 99, 99, warmup=True)]
    p = summarize(records, load=2, duration_s=10.0, slo=Slo())
    assert p.output_tokens_per_s == pytest.approx(120 / 10)
    assert p.answer_tokens_per_s == pytest.approx(40 / 10)
    assert p.reasoning_tokens_per_s == pytest.approx(80 / 10)
    assert p.ttfa_s["p50"] == pytest.approx(0.5)
    assert p.ttfa_s["max"] == pytest.approx(0.9)
    assert p.ttft_s["p50"] == pytest.approx(0.1)
    assert p.thinking_requests == 2
    assert p.reasoning_tokens_sources == {"usage": 3}


def test_answer_token_price_spreads_the_output_dollars_over_answer_tokens():
    # $6 bill; 1 M output (of which 0.25 M answer) + 4 M input at weight 0.25 → $3/M output.
    c = token_cost(2.0, 3.0, input_tokens=4_000_000, output_tokens=1_000_000, answer_tokens=250_000)
    assert c.usd_per_million_output == pytest.approx(3.0)
    assert c.usd_per_million_answer == pytest.approx(12.0)  # $3 of output ÷ 0.25 M answer tokens
    no_thinking = token_cost(2.0, 3.0, 4_000_000, 1_000_000, answer_tokens=1_000_000)
    assert no_thinking.usd_per_million_answer == pytest.approx(no_thinking.usd_per_million_output)
    assert token_cost(2.0, 3.0, 0, 100, answer_tokens=0).usd_per_million_answer is None
    with pytest.raises(ValueError, match="answer tokens"):
        token_cost(1.0, 1.0, 0, 10, answer_tokens=11)


def test_report_carries_answer_throughput_first_answer_latency_and_answer_price(tmp_path):
    win = LevelWindow(load=2.0, start_ts=0.0, window_s=10.0, users=2, gpu_samples=[(0.0, 1)], replicas=1)
    win.gpu_type = "h100"
    meta = RunMeta("concurrency", "s", "http://x", "m", [win], 1.0, 10.0, 0.0)
    (tmp_path / RUN_META).write_text(json.dumps(meta.to_json()))
    records = [rec(0.1, 0.5, 30, 10), rec(0.1, 0.7, 30, 10)]
    (tmp_path / RECORDS).write_text("".join(r.to_line() + "\n" for r in records))
    from loadtest.cost import load_prices

    rep = build_report(tmp_path, slo=Slo(), prices=load_prices())
    paths = write_report(rep, tmp_path)
    point = json.loads(paths["json"].read_text())["points"][0]
    assert point["answer_tokens_per_s"] == pytest.approx(2.0)
    assert point["ttfa_s"]["p50"] == pytest.approx(0.6)
    cost = point["cost"]
    assert cost["usd_per_million_answer"] == pytest.approx(cost["usd_per_million_output"] * 80 / 20)
    html = paths["html"].read_text()
    assert "$/M answer" in html
    assert "answer tok/s" in html
    assert "<td>25 %</td>" in html  # answer share: 20 of 80 output tokens
    assert paths["png"].stat().st_size > 0
