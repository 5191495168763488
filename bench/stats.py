"""The harness arithmetic: ratios, per-role CPU accounting, SLO attainment (percentiles: loadtest.stats).
Pure functions only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from loadtest.stats import percentile  # the kit's one percentile (None for no values)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or ``None`` when either is missing or the denominator is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def added(value: float | None, baseline: float | None) -> float | None:
    """``value - baseline`` (e.g. TTFT added over the direct arm), ``None`` if either is missing."""
    if value is None or baseline is None:
        return None
    return value - baseline


@dataclass(frozen=True)
class ProcCpu:
    """One process at one instant: identity (pid + create time, so a reused pid is a new process)."""

    pid: int
    create_time: float
    role: str
    cpu_s: float  # user + system seconds so far


def cpu_delta_by_role(before: Iterable[ProcCpu], after: Iterable[ProcCpu]) -> dict[str, float]:
    """CPU seconds each role spent between two snapshots.

    A process seen only in ``after`` started in between: all its CPU counts. A process seen only in
    ``before`` ended in between: what it spent after the first snapshot is lost (psutil cannot read
    a reaped process), so it contributes nothing — harnesses keep processes alive across a window.
    """
    start = {(p.pid, p.create_time): p.cpu_s for p in before}
    out: dict[str, float] = {}
    for p in after:
        delta = p.cpu_s - start.get((p.pid, p.create_time), 0.0)
        out[p.role] = out.get(p.role, 0.0) + max(delta, 0.0)
    return out


def cpu_ms_per_request(cpu_s_by_role: Mapping[str, float], requests: int) -> dict[str, float | None]:
    """Milliseconds of CPU per completed request for each role (``None`` with no requests)."""
    return {role: (s * 1000.0 / requests if requests > 0 else None) for role, s in cpu_s_by_role.items()}


@dataclass(frozen=True)
class RequestResult:
    """One streamed request as the load client saw it."""

    ok: bool
    ttft_s: float | None  # first content token
    latency_s: float  # until the stream ended
    tokens: int  # completion tokens (the stream's usage; token events when it had none)
    error: str | None = None
    prompt_tokens: int | None = None  # from the stream's usage chunk, when asked for
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    start_s: float | None = None  # seconds since the measured window began (step mode)
    events: int = 0  # SSE events that carried a token (with MTP one event carries several)
    turn: int | None = None  # conversations mode: the turn of its conversation (0 = the first)


@dataclass(frozen=True)
class LoadSummary:
    requests: int
    ok: int
    errors: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    latency_p50_ms: float | None
    first_error: str | None
    tokens_per_event: float | None = None  # the event rate the stack relayed (1.0: one per token)


def summarize(results: Sequence[RequestResult], wall_s: float) -> LoadSummary:
    """Throughput over the measured window and latency percentiles over successful requests."""
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000.0 for r in ok if r.ttft_s is not None]
    lat = [r.latency_s * 1000.0 for r in ok]
    tokens = sum(r.tokens for r in ok)
    events = sum(r.events for r in ok)
    first_error = next((r.error for r in results if not r.ok), None)
    return LoadSummary(
        requests=len(results),
        ok=len(ok),
        errors=len(results) - len(ok),
        tokens=tokens,
        wall_s=wall_s,
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        requests_per_s=len(ok) / wall_s if wall_s > 0 else 0.0,
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        ttft_p99_ms=percentile(ttfts, 99),
        latency_p50_ms=percentile(lat, 50),
        first_error=first_error,
        tokens_per_event=tokens / events if events else None,
    )


def cache_hit_rate(results: Sequence[RequestResult]) -> float | None:
    """Share of prompt tokens served from the prefix cache, over requests that reported both."""
    pairs = [(r.prompt_tokens, r.cached_tokens) for r in results if r.prompt_tokens and r.cached_tokens is not None]
    total = sum(p for p, _ in pairs)
    return sum(c for _, c in pairs) / total if total else None


def slo_attainment(results: Sequence[RequestResult], ttft_slo_s: float) -> float | None:
    """Share of requests that succeeded with TTFT within the SLO (failures count as misses)."""
    if not results:
        return None
    good = sum(1 for r in results if r.ok and r.ttft_s is not None and r.ttft_s <= ttft_slo_s)
    return good / len(results)


def first_time_at_least(samples: Sequence[tuple[float, float]], level: float, after: float = 0.0) -> float | None:
    """The first sample time ``t ≥ after`` whose value reaches ``level``, or ``None``."""
    for t, v in sorted(samples):
        if t >= after and v >= level:
            return t
    return None


def load_balance(loads: Sequence[float]) -> float | None:
    """Highest load over the mean load (1.0 = perfectly even); ``None`` when there is no load."""
    if not loads:
        return None
    mean = sum(loads) / len(loads)
    if mean <= 0:
        return None
    return max(loads) / mean
