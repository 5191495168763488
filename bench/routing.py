"""Routing gain: four simulated engines with prefix caches behind our gateway (plain uvicorn over a
static endpoint list), a multi-turn coding-agent workload, one run per routing policy.

Engines are fresh for every policy (empty caches). Cache hits are read two ways: the prompt tokens
the engines report as cached in each response's usage (client side), and each engine's
``/metrics`` (``sglang:cache_hit_rate``, prompt/generation token counters) for per-engine load.
Each engine's own TTFT and queue-time histograms (sums and counts) show where the time went: in the
engine (queued prefill work) or in front of it.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.client import Spec
from bench.load import measure
from bench.procs import ProcGroup
from bench.servers import bench_settings, engine_health_url, engine_proc, gateway_proc, sim_overrides
from bench.stats import (
    RequestResult,
    cache_hit_rate,
    cpu_ms_per_request,
    load_balance,
    percentile,
    ratio,
    summarize,
)
from serving.engines.base import prom_value

POLICIES = ("prefix_affinity", "least_outstanding", "round_robin")
ENGINES = 4
# Each policy runs the whole workload ROUNDS times, in A B C, C B A, A B C … order, and its rounds are
# pooled: load that drifts on a shared machine then falls on every policy alike.
ROUNDS = 8
START_TIMEOUT_S = 120.0


def engine_stats(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10.0).text
    return {
        "cache_hit_rate": prom_value(text, "sglang:cache_hit_rate"),
        "prompt_tokens": prom_value(text, "sglang:prompt_tokens_total"),
        "generation_tokens": prom_value(text, "sglang:generation_tokens_total"),
        "requests": prom_value(text, "sglang:e2e_request_latency_seconds_count"),
        "ttft_s_sum": prom_value(text, "sglang:time_to_first_token_seconds_sum"),
        "ttft_count": prom_value(text, "sglang:time_to_first_token_seconds_count"),
        "queue_s_sum": prom_value(text, "sglang:queue_time_seconds_sum"),
        "queue_count": prom_value(text, "sglang:queue_time_seconds_count"),
    }


Run = tuple[dict[str, Any], list[dict[str, float]]]  # one measured window, each engine's /metrics after it


def run_policy(policy: str, spec_base: Spec, logs: Path, time_scale: float) -> Run:
    ov = sim_overrides(zero_delay=False, time_scale=time_scale)
    gw_ov = {**ov, "routing": {"policy": policy}}
    g = ProcGroup()
    try:
        urls = []
        for i in range(ENGINES):
            eng, url = engine_proc(ov, logs, name=f"engine-{i}")
            g.add(eng)
            urls.append(url)
        for p, url in zip(g.procs, urls, strict=True):
            p.wait_http(engine_health_url(url), START_TIMEOUT_S)
        gw, gurl = gateway_proc(gw_ov, urls, logs)
        g.add(gw).wait_http(gurl + "/v1/models", START_TIMEOUT_S)
        # Warm-up requests would seed caches unevenly across policies: conversations start cold.
        spec = Spec(**{**spec_base.__dict__, "url": gurl, "model": bench_settings(ov).model.served_name or ""})
        m = measure(spec, g.procs, logs)
        return m, [engine_stats(u) for u in urls]
    finally:
        g.stop_all()


def _summarize_policy(runs: list[Run]) -> dict[str, Any]:
    """The policy's rounds pooled: every request's result, the windows' wall time, each engine's counters."""
    results: list[RequestResult] = [r for m, _ in runs for r in m["results"]]
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    s = asdict(summarize(results, sum(m["wall_s"] for m, _ in runs)))
    per_engine = [{k: sum(run[1][i][k] for run in runs) for k in runs[0][1][i]} for i in range(len(runs[0][1]))]
    per_engine = [{**e, "cache_hit_rate": _mean([run[1][i]["cache_hit_rate"] for run in runs])}
                  for i, e in enumerate(per_engine)]  # fmt: skip
    cpu_s: dict[str, float] = {}
    for m, _ in runs:
        for role, v in m["cpu_s"].items():
            cpu_s[role] = cpu_s.get(role, 0.0) + v
    return {
        "status": "measured",
        "rounds": len(runs),
        # the first turn (cold prompts, every policy alike) apart from the later ones (where routing
        # decides what is cached)
        "by_turn": {name: _turns(ok, first) for name, first in (("first", True), ("later", False))},
        "requests": s["requests"],
        "errors": s["errors"],
        "first_error": s["first_error"],
        "cache_hit_rate": cache_hit_rate(ok),
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p95_ms": percentile(ttfts, 95),
        "tokens_per_s": s["tokens_per_s"],
        "requests_per_s": s["requests_per_s"],
        "wall_s": s["wall_s"],
        "per_engine": per_engine,
        "max_over_mean_requests": load_balance([e["requests"] for e in per_engine]),
        "max_over_mean_prompt_tokens": load_balance([e["prompt_tokens"] for e in per_engine]),
        "cpu_ms_per_request": cpu_ms_per_request(cpu_s, s["ok"]),
    }


def _turns(ok: list[RequestResult], first: bool) -> dict[str, Any]:
    sel = [r for r in ok if r.turn is not None and (r.turn == 0) == first]
    ttfts = [r.ttft_s * 1000 for r in sel if r.ttft_s is not None]
    return {"requests": len(sel), "cache_hit_rate": cache_hit_rate(sel),
            "ttft_p50_ms": percentile(ttfts, 50), "ttft_p95_ms": percentile(ttfts, 95)}  # fmt: skip


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def run(spec_base: Spec, logs: Path, time_scale: float) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {p: [] for p in POLICIES}
    failed: dict[str, dict[str, Any]] = {}
    for r in range(ROUNDS):
        for policy in POLICIES if r % 2 == 0 else POLICIES[::-1]:
            if policy in failed:
                continue
            print(f"[routing] {policy}, round {r + 1} of {ROUNDS} …", flush=True)
            t0 = time.monotonic()
            log_dir = logs / policy / f"round-{r + 1}"
            try:
                runs[policy].append(run_policy(policy, spec_base, log_dir, time_scale))
            except Exception as exc:
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / "error.txt").write_text(traceback.format_exc())
                status = f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                failed[policy] = {"status": status}
            brief = failed[policy]["status"] if policy in failed else _brief(_summarize_policy(runs[policy][-1:]))
            print(f"[routing] {policy}: {brief} ({time.monotonic() - t0:.0f} s)", flush=True)
    policies = {p: failed.get(p) or _summarize_policy(runs[p]) for p in POLICIES}
    return {
        "status": "measured",
        "workload": {
            "engines": ENGINES,
            "conversations": spec_base.conversations,
            "turns": spec_base.turns,
            "concurrent_conversations": spec_base.concurrency,
            "max_tokens": spec_base.max_tokens,
            "rounds": ROUNDS,
            "engine": f"simulator (timing model, time scale {time_scale}), qwen3.6-27b preset, tp 8",
            "gateway": "serving.gateway.create_app on plain uvicorn, StaticEndpoints",
        },
        "policies": policies,
        "goals": goals(policies),
    }


def goals(policies: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15 §3: prefix affinity lowers latency, not only raises cache hits (one run, side by side)."""
    pa, rr = policies.get("prefix_affinity", {}), policies.get("round_robin", {})
    hits = ratio(pa.get("cache_hit_rate"), rr.get("cache_hit_rate"))

    def not_above(key: str) -> bool | None:
        a, b = pa.get(key), rr.get(key)
        return None if a is None or b is None else a <= b

    def vs_rr(key: str) -> str | None:
        a, b = pa.get(key), rr.get(key)
        return None if a is None or b is None else f"{a:.1f} vs {b:.1f}"

    bal = pa.get("max_over_mean_requests")
    return [
        {"goal": "prefix affinity cache hits ≥ 1.5× round robin's", "value": hits,
         "met": None if hits is None else hits >= 1.5},
        {"goal": "prefix affinity TTFT p50 ≤ round robin's (ms)", "value": vs_rr("ttft_p50_ms"),
         "met": not_above("ttft_p50_ms")},
        {"goal": "prefix affinity TTFT p95 ≤ round robin's (ms)", "value": vs_rr("ttft_p95_ms"),
         "met": not_above("ttft_p95_ms")},
        {"goal": "prefix affinity: no engine above 1.5× mean requests", "value": bal,
         "met": None if bal is None else bal <= 1.5},
    ]  # fmt: skip


def _brief(p: dict[str, Any]) -> str:
    if p.get("status") != "measured":
        return p.get("status", "?")
    hr = p["cache_hit_rate"]
    return (
        f"hit rate {hr if hr is None else round(hr, 3)}, TTFT p50 {p['ttft_p50_ms']} ms, "
        f"{p['tokens_per_s']:.0f} tok/s, errors {p['errors']}, max/mean {p['max_over_mean_requests']}"
    )
