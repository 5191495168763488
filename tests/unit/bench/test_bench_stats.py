"""The benchmark harness arithmetic: percentiles, ratios, per-role CPU accounting, summaries."""

from __future__ import annotations

import pytest

from bench.client import TOKEN_RE, _decode_event
from bench.stats import (
    ProcCpu,
    RequestResult,
    added,
    cache_hit_rate,
    cpu_delta_by_role,
    cpu_ms_per_request,
    first_time_at_least,
    load_balance,
    percentile,
    ratio,
    slo_attainment,
    summarize,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # interpolates between the two middle ranks
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([10.0, 0.0, 20.0, 30.0, 40.0], 25, 10.0),  # unsorted input
        (list(range(1, 101)), 99, 99.01),  # numpy "linear": 1 + 0.99 × 99
    ],
)
def test_percentile_linear(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_empty_and_bounds() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_ratio_and_added() -> None:
    assert ratio(80.0, 100.0) == pytest.approx(0.8)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 3.0) is None
    assert added(12.5, 10.0) == pytest.approx(2.5)
    assert added(None, 10.0) is None


def test_cpu_delta_by_role_charges_new_processes_fully_and_ignores_reused_pids() -> None:
    before = [
        ProcCpu(10, 1.0, "engine", 5.0),
        ProcCpu(20, 1.0, "gateway", 2.0),
        ProcCpu(30, 1.0, "ray", 9.0),  # ends in the window: contributes nothing
    ]
    after = [
        ProcCpu(10, 1.0, "engine", 7.5),  # +2.5
        ProcCpu(20, 1.0, "gateway", 2.25),  # +0.25
        ProcCpu(21, 5.0, "gateway", 0.5),  # started in the window: +0.5
        ProcCpu(30, 6.0, "ray", 1.0),  # pid 30 reused by a new process: +1.0, not 1.0 - 9.0
    ]
    got = cpu_delta_by_role(before, after)
    assert got == pytest.approx({"engine": 2.5, "gateway": 0.75, "ray": 1.0})


def test_cpu_ms_per_request() -> None:
    assert cpu_ms_per_request({"engine": 2.0, "client": 0.5}, 1000) == pytest.approx({"engine": 2.0, "client": 0.5})
    assert cpu_ms_per_request({"engine": 2.0}, 0) == {"engine": None}


def test_summarize_counts_only_successes_for_throughput_and_latency() -> None:
    results = [
        RequestResult(True, 0.010, 0.5, 100),
        RequestResult(True, 0.030, 0.7, 100),
        RequestResult(False, None, 0.1, 0, "HTTP 503: busy"),
    ]
    s = summarize(results, wall_s=2.0)
    assert (s.requests, s.ok, s.errors, s.tokens) == (3, 2, 1, 200)
    assert s.tokens_per_s == pytest.approx(100.0)
    assert s.requests_per_s == pytest.approx(1.0)
    assert s.ttft_p50_ms == pytest.approx(20.0)
    assert s.first_error == "HTTP 503: busy"


def test_load_balance() -> None:
    assert load_balance([10, 10, 10, 10]) == pytest.approx(1.0)
    assert load_balance([30, 10, 0, 0]) == pytest.approx(3.0)
    assert load_balance([0, 0]) is None
    assert load_balance([]) is None


def test_token_counting_skips_role_and_done_events() -> None:
    role = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}'
    tok = b'data: {"choices":[{"delta":{"content":"hi"}}]}'
    think = b'data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}'
    assert not TOKEN_RE.search(role)
    assert TOKEN_RE.search(tok)
    assert TOKEN_RE.search(think)
    text: list[str] = []
    assert [_decode_event(e, text) for e in (role, tok, think, b"data: [DONE]")] == [0, 1, 1, 0]
    assert text == ["hi"]  # reasoning is a token but not part of the answer carried to the next turn


def test_cache_hit_rate_weights_by_prompt_tokens_and_skips_unreported() -> None:
    rs = [
        RequestResult(True, 0.01, 0.1, 5, None, 1000, 900),
        RequestResult(True, 0.01, 0.1, 5, None, 3000, 0),
        RequestResult(True, 0.01, 0.1, 5),  # no usage reported: left out, not counted as a miss
    ]
    assert cache_hit_rate(rs) == pytest.approx(900 / 4000)
    assert cache_hit_rate([RequestResult(True, 0.01, 0.1, 5)]) is None


def test_slo_attainment_counts_failures_as_misses() -> None:
    rs = [
        RequestResult(True, 0.2, 1.0, 10),
        RequestResult(True, 1.5, 2.0, 10),  # too slow
        RequestResult(False, None, 0.1, 0, "reset"),  # failed
        RequestResult(True, 0.9, 1.0, 10),
    ]
    assert slo_attainment(rs, 1.0) == pytest.approx(0.5)
    assert slo_attainment([], 1.0) is None


def test_first_time_at_least() -> None:
    samples = [(0.0, 1.0), (5.0, 1.0), (7.5, 2.0), (8.0, 4.0), (3.0, 3.0)]
    assert first_time_at_least(samples, 2, after=4.0) == 7.5  # the 3.0 s sample precedes the step
    assert first_time_at_least(samples, 4) == 8.0
    assert first_time_at_least(samples, 5) is None


def test_parse_monitor_lines() -> None:
    from bench.autoscale import parse_monitor

    text = (
        "INFO x\nreplicas t=100.5 running=1 endpoints=1\nreplicas error X: y\nreplicas t=101.0 running=4 endpoints=2\n"
    )
    assert parse_monitor(text) == [(100.5, 1, 1), (101.0, 4, 2)]


def test_pooled_windows_add_up_work_and_cpu_and_keep_each_windows_idle_background() -> None:
    from bench.load import pool

    def window(n: int, wall: float, cpu: float, idle: float) -> dict:
        results = [RequestResult(ok=True, ttft_s=0.01 * (i + 1), latency_s=0.1, tokens=10, events=5) for i in range(n)]
        return {"results": results, "wall_s": wall, "cpu_s": {"gateway": cpu}, "idle_cpu_per_s": {"gateway": idle}}

    m = pool([window(100, 20.0, 4.0, 0.1), window(300, 20.0, 6.0, 0.0)])
    assert m["summary"]["ok"] == 400
    assert m["summary"]["tokens_per_s"] == pytest.approx(4000 / 40.0)  # not the mean of 50 and 150
    assert m["cpu_ms_per_request"]["gateway"] == pytest.approx(10.0 * 1000 / 400)
    assert m["cpu_ms_per_request_net"]["gateway"] == pytest.approx((4.0 - 0.1 * 20 + 6.0) * 1000 / 400)
    assert m["idle_cpu_per_s"]["gateway"] == pytest.approx(0.05)
    assert m["windows_s"] == [20.0, 20.0]
