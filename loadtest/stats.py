"""The arithmetic of a load-test report: exact percentiles, SLO attainment, goodput, the knee.

Pure functions over :class:`loadtest.records.RequestRecord` lists; no I/O, no Locust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.records import RequestRecord


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 ≤ q ≤ 100) with linear interpolation between closest ranks (the same
    definition as ``numpy.percentile(..., method="linear")``); None for no values. The one
    percentile of the kit: load tests, benchmarks and their reports all use it."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


@dataclass(frozen=True)
class Slo:
    """Latency objectives at a percentile. Defaults: TTFT p95 ≤ 1 s and TPOT p95 ≤ 50 ms."""

    ttft_s: float = 1.0
    tpot_s: float = 0.050
    percentile: float = 95.0

    def request_meets(self, r: RequestRecord) -> bool:
        """One request is 'good' when it succeeded and met both objectives on its own."""
        if not r.ok or r.ttft_s is None:
            return False
        return r.ttft_s <= self.ttft_s and (r.tpot_s is None or r.tpot_s <= self.tpot_s)


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": (sum(values) / len(values)) if values else None,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


@dataclass
class PointSummary:
    """One load level of a sweep (a concurrency or an arrival rate), warm-up excluded."""

    load: float  # concurrency (closed loop) or requests/s offered (open loop)
    duration_s: float
    requests: int
    errors: int
    throughput_rps: float
    output_tokens_per_s: float  # reasoning + answer
    input_tokens_per_s: float
    goodput_rps: float  # requests/s that met the SLO individually
    slo_attainment: float  # share of requests that met the SLO individually
    meets_slo: bool  # the SLO's percentile of TTFT and TPOT are both within their objectives
    ttft_s: dict[str, float | None] = field(default_factory=dict)
    ttfa_s: dict[str, float | None] = field(default_factory=dict)  # time to first answer token
    tpot_s: dict[str, float | None] = field(default_factory=dict)
    itl_s: dict[str, float | None] = field(default_factory=dict)
    e2e_s: dict[str, float | None] = field(default_factory=dict)
    pacer_lag_s: dict[str, float | None] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answer_tokens_per_s: float = 0.0
    reasoning_tokens_per_s: float = 0.0
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    reasoning_tokens_sources: dict[str, int] = field(default_factory=dict)  # requests per source
    thinking_requests: int = 0
    images: int = 0
    image_tokens_expected: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(records: Sequence[RequestRecord], *, load: float, duration_s: float, slo: Slo) -> PointSummary:
    """Summarize the measured (non-warm-up) requests of one load level over ``duration_s``."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    itl = [x for r in ok for x in r.itl_s]
    good = sum(1 for r in measured if slo.request_meets(r))
    completion = sum(r.completion_tokens for r in ok)
    reasoning = sum(r.reasoning_tokens for r in ok)
    answer = sum(r.answer_tokens for r in ok)
    sources: dict[str, int] = {}
    for r in ok:
        sources[r.reasoning_tokens_source] = sources.get(r.reasoning_tokens_source, 0) + 1
    prompt = sum(r.prompt_tokens for r in ok)
    ttft_q = percentile(ttft, slo.percentile)
    tpot_q = percentile(tpot, slo.percentile) if tpot else 0.0
    meets = (
        bool(ok)
        and len(ok) == len(measured)
        and ttft_q is not None
        and ttft_q <= slo.ttft_s
        and tpot_q is not None
        and tpot_q <= slo.tpot_s
    )
    return PointSummary(
        load=load,
        duration_s=duration_s,
        requests=len(measured),
        errors=len(measured) - len(ok),
        throughput_rps=len(ok) / duration_s,
        output_tokens_per_s=completion / duration_s,
        input_tokens_per_s=prompt / duration_s,
        goodput_rps=good / duration_s,
        slo_attainment=(good / len(measured)) if measured else 0.0,
        meets_slo=meets,
        ttft_s=_dist(ttft),
        ttfa_s=_dist([r.ttfa_s for r in ok if r.ttfa_s is not None]),
        tpot_s=_dist(tpot),
        itl_s=_dist(itl),
        e2e_s=_dist([r.e2e_s for r in ok]),
        pacer_lag_s=_dist([r.pacer_lag_s for r in measured if r.pacer_lag_s is not None]),
        prompt_tokens=prompt,
        completion_tokens=completion,
        answer_tokens_per_s=answer / duration_s,
        reasoning_tokens_per_s=reasoning / duration_s,
        reasoning_tokens=reasoning,
        answer_tokens=answer,
        reasoning_tokens_sources=sources,
        thinking_requests=sum(1 for r in ok if r.thinking),
        images=sum(r.images for r in ok),
        image_tokens_expected=sum(r.image_tokens_expected for r in ok),
    )


def knee_index(x: Sequence[float], y: Sequence[float]) -> int | None:
    """The knee of a rising, flattening curve (Kneedle, Satopää et al. 2011): after scaling both
    axes to [0, 1], the point farthest above the chord from the first to the last point.
    None with fewer than three points or a flat curve."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) < 3:
        return None
    x0, x1 = min(x), max(x)
    y0, y1 = min(y), max(y)
    if x1 == x0 or y1 == y0:
        return None
    xn = [(v - x0) / (x1 - x0) for v in x]
    yn = [(v - y0) / (y1 - y0) for v in y]
    # Distance above the chord between the end points (in scaled units).
    sx, sy = xn[-1] - xn[0], yn[-1] - yn[0]
    diffs = [yn[i] - (yn[0] + sy * (xn[i] - xn[0]) / sx) for i in range(len(x))] if sx else [0.0] * len(x)
    best = max(range(len(x)), key=lambda i: diffs[i])
    return best if diffs[best] > 0 else None


def slo_point_index(points: Sequence[PointSummary]) -> int | None:
    """The highest-throughput load level that still meets the SLO (None if none does)."""
    meeting = [i for i, p in enumerate(points) if p.meets_slo]
    return max(meeting, key=lambda i: points[i].throughput_rps) if meeting else None
