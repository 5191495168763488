"""Stream timing from SSE lines with a controlled clock: TTFT counts reasoning, TPOT uses usage."""

import json

import pytest

from loadtest.sse import read_stream

pytestmark = pytest.mark.unit


def feed(events):
    """events: (time, raw line bytes); returns readline + clock that advance together."""
    state = {"i": 0, "now": 0.0}

    def readline():
        if state["i"] >= len(events):
            return b""
        t, line = events[state["i"]]
        state["i"] += 1
        state["now"] = t
        return line

    return readline, lambda: state["now"]


def data(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n"


def delta(**d):
    return data({"choices": [{"index": 0, "delta": d}]})


def test_ttft_counts_first_reasoning_token_and_tpot_uses_usage():
    events = [
        (0.05, delta(role="assistant")),
        (0.06, b"\n"),
        (0.20, delta(reasoning_content="hm")),
        (0.30, delta(content="a")),
        (0.40, delta(content="b c")),
        (0.41, data({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})),
        (0.42, b"data: [DONE]\n"),
    ]
    readline, clock = feed(events)
    t = read_stream(readline, 0.0, clock)
    assert t.error is None
    assert t.done
    assert t.ttft_s == pytest.approx(0.20)
    assert t.itl_s == pytest.approx([0.10, 0.10])
    assert t.events == 3
    assert t.tokens == 5  # usage wins over counted events (an event may carry several)
    assert t.e2e_s == pytest.approx(0.42)
    assert t.tpot_s == pytest.approx((0.42 - 0.20) / 4)
    assert t.prompt_tokens == 9


def test_errors_and_truncation_are_reported():
    readline, clock = feed([(0.1, data({"error": {"message": "boom"}}))])
    assert read_stream(readline, 0.0, clock).error == "boom"
    readline, clock = feed([(0.1, delta(content="x"))])
    t = read_stream(readline, 0.0, clock)
    assert t.error
    assert "DONE" in t.error
    assert t.tpot_s is None  # one token: no TPOT


def test_multi_token_chunks_give_chunk_itl_and_per_token_tpot_from_usage():
    # SGLang with MTP: one chunk per scheduler step, several tokens in each delta.
    events = [
        (0.10, delta(content="a")),
        (0.13, delta(content="b c d")),
        (0.16, delta(content="e f")),
        (0.17, data({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})),
        (0.17, b"data: [DONE]\n"),
    ]
    readline, clock = feed(events)
    t = read_stream(readline, 0.0, clock)
    assert t.itl_s == pytest.approx([0.03, 0.03])  # gaps between chunks, as bench_serving measures ITL
    assert t.events == 3
    assert t.tokens == 6  # usage, not events
    assert t.tpot_s == pytest.approx((0.17 - 0.10) / 5)
