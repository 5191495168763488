"""Percentiles, goodput, SLO attainment, knee and SLO point arithmetic."""

import pytest

from loadtest.records import RequestRecord
from loadtest.stats import Slo, knee_index, percentile, slo_point_index, summarize

pytestmark = pytest.mark.unit


def rec(ttft, tpot, *, ok=True, out=10, inp=5, warmup=False, load=1.0):
    return RequestRecord(
        start_ts=0.0,
        scenario="s",
        load=load,
        status=200 if ok else 500,
        ok=ok,
        e2e_s=ttft + tpot * (out - 1),
        ttft_s=ttft if ok else None,
        tpot_s=tpot if ok else None,
        itl_s=[tpot] * (out - 1) if ok else [],
        prompt_tokens=inp,
        completion_tokens=out if ok else 0,
        warmup=warmup,
    )


def test_percentile_interpolates_between_ranks():
    xs = [4.0, 1.0, 3.0, 2.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 4.0
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 95) == pytest.approx(3.85)  # 1 + 0.95 × 3 ranks
    assert percentile([], 50) is None  # one percentile for the kit: no values, no number
    with pytest.raises(ValueError, match="percentile"):
        percentile(xs, 101)


def test_goodput_counts_requests_meeting_both_objectives():
    slo = Slo(ttft_s=1.0, tpot_s=0.05)
    records = [
        rec(0.5, 0.01),
        rec(0.5, 0.01),
        rec(2.0, 0.01),
        rec(0.5, 0.2),
        rec(0, 0, ok=False),
        rec(9, 9, warmup=True),
    ]
    p = summarize(records, load=4, duration_s=10.0, slo=slo)
    assert p.requests == 5  # warm-up excluded
    assert p.errors == 1
    assert p.goodput_rps == pytest.approx(2 / 10.0)
    assert p.slo_attainment == pytest.approx(2 / 5)
    assert p.throughput_rps == pytest.approx(4 / 10.0)
    assert p.output_tokens_per_s == pytest.approx(40 / 10.0)
    assert p.input_tokens_per_s == pytest.approx(20 / 10.0)
    assert not p.meets_slo  # an error and slow tails


def test_meets_slo_uses_the_percentile_not_the_mean():
    slo = Slo(ttft_s=1.0, tpot_s=0.05, percentile=95)
    fast = [rec(0.1, 0.01) for _ in range(99)]
    assert summarize([*fast, rec(5.0, 0.01)], load=1, duration_s=1, slo=slo).meets_slo  # 1 % slow: p95 fine
    slow = [rec(5.0, 0.01) for _ in range(10)]
    assert not summarize(fast + slow, load=1, duration_s=1, slo=slo).meets_slo  # 9 % slow: p95 breaks


def test_knee_is_where_throughput_stops_rising():
    x = [1, 2, 4, 8, 16, 32]
    y = [1, 2, 4, 8, 8.2, 8.3]
    assert knee_index(x, y) == 3
    assert knee_index([1, 2, 3], [1, 2, 3]) is None  # a straight line has no knee
    assert knee_index([1, 2], [1, 2]) is None


def test_slo_point_is_the_highest_throughput_level_that_meets():
    slo = Slo(ttft_s=1.0, tpot_s=0.05)
    pts = [summarize([rec(0.1, 0.01, load=c)] * c, load=c, duration_s=1, slo=slo) for c in (1, 2, 4)] + [
        summarize([rec(3.0, 0.01, load=8)] * 8, load=8, duration_s=1, slo=slo)
    ]
    assert slo_point_index(pts) == 2
    assert slo_point_index(pts[3:]) is None
