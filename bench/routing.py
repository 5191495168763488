"""Routing gain: four simulated engines with prefix caches behind our gateway (plain uvicorn over a
static endpoint list), a multi-turn coding-agent workload, one run per routing policy.

Engines are fresh for every policy (empty caches). Cache hits are read two ways: the prompt tokens
the engines report as cached in each response's usage (client side), and each engine's
``/metrics`` (``sglang:cache_hit_rate``, prompt/generation token counters) for per-engine load.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from bench.client import Spec
from bench.load import measure
from bench.procs import ProcGroup
from bench.servers import bench_settings, engine_health_url, engine_proc, gateway_proc, sim_overrides
from bench.stats import RequestResult, cache_hit_rate, load_balance, percentile, ratio
from serving.engines.base import prom_value

POLICIES = ("prefix_affinity", "least_outstanding", "round_robin")
ENGINES = 4
START_TIMEOUT_S = 120.0


def engine_stats(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10.0).text
    return {
        "cache_hit_rate": prom_value(text, "sglang:cache_hit_rate"),
        "prompt_tokens": prom_value(text, "sglang:prompt_tokens_total"),
        "generation_tokens": prom_value(text, "sglang:generation_tokens_total"),
        "requests": prom_value(text, "sglang:e2e_request_latency_seconds_count"),
    }


def run_policy(policy: str, spec_base: Spec, logs: Path, time_scale: float) -> dict[str, Any]:
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
        per_engine = [engine_stats(u) for u in urls]
        return _summarize_policy(m, per_engine)
    finally:
        g.stop_all()


def _summarize_policy(m: dict[str, Any], per_engine: list[dict[str, float]]) -> dict[str, Any]:
    results: list[RequestResult] = m["results"]
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    s = m["summary"]
    return {
        "status": "measured",
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
        "cpu_ms_per_request": m["cpu_ms_per_request"],
    }


def run(spec_base: Spec, logs: Path, time_scale: float) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for policy in POLICIES:
        print(f"[routing] {policy} …", flush=True)
        t0 = time.monotonic()
        try:
            policies[policy] = run_policy(policy, spec_base, logs / policy, time_scale)
        except Exception as exc:
            (logs / policy).mkdir(parents=True, exist_ok=True)
            (logs / policy / "error.txt").write_text(traceback.format_exc())
            policies[policy] = {"status": f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        p = policies[policy]
        print(f"[routing] {policy}: {_brief(p)} ({time.monotonic() - t0:.0f} s)", flush=True)
    return {
        "status": "measured",
        "workload": {
            "engines": ENGINES,
            "conversations": spec_base.conversations,
            "turns": spec_base.turns,
            "concurrent_conversations": spec_base.concurrency,
            "max_tokens": spec_base.max_tokens,
            "engine": f"simulator (timing model, time scale {time_scale}), qwen3.6-27b preset, tp 8",
            "gateway": "serving.gateway.create_app on plain uvicorn, StaticEndpoints",
        },
        "policies": policies,
        "goals": goals(policies),
    }


def goals(policies: dict[str, Any]) -> list[dict[str, Any]]:
    pa, rr = policies.get("prefix_affinity", {}), policies.get("round_robin", {})
    hits = ratio(pa.get("cache_hit_rate"), rr.get("cache_hit_rate"))
    ttft_lower = None
    if pa.get("ttft_p50_ms") is not None and rr.get("ttft_p50_ms") is not None:
        ttft_lower = pa["ttft_p50_ms"] < rr["ttft_p50_ms"]
    bal = pa.get("max_over_mean_requests")
    return [
        {"goal": "prefix affinity cache hits ≥ 1.5× round robin's", "value": hits,
         "met": None if hits is None else hits >= 1.5},
        {"goal": "prefix affinity TTFT p50 < round robin's", "value": pa.get("ttft_p50_ms"), "met": ttft_lower},
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
