"""Per-tenant limits: what they cost and how well they hold, beside the stack tax.

1. **Cost.** The stack-tax arm (b) — our Ray Serve app, the zero-delay simulator, closed-loop
   streams — run four times back to back for the same duration: limits off, on, on, off
   (``gateway.limits.requests_per_min`` / ``tokens_per_min`` shared across replicas through the
   limits actor); each setting's two windows are pooled, so the VM's drift falls on both alike.
   The limits are set to twice the rate measured without them, so blocks are leased every few
   seconds and nothing is refused: what is measured is the accounting. Reported: the
   on/off ratio of tokens/s and of stack CPU per request (goal: within 5 %).
2. **Accuracy.** Our app with 3 gateway replicas and a low requests/min limit, offered 3× that
   limit (:func:`admitted_rate`): the admitted rate against the configured limit (goal: within 10 %).

``python -m bench.run --only limits [--quick]``; the integration test
``tests/integration/gateway/test_gateway_shared_limits_ray.py`` runs :func:`admitted_rate` too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.client import Spec
from bench.procs import ProcGroup
from bench.servers import bench_settings, ray_proc, sim_overrides
from bench.stack_tax import ARMS, START_TIMEOUT_S, Arm, pooled, run_arm, start_ours_ray
from bench.stats import ratio

TAX_GOAL = 0.05  # limits on may change the stack's tokens/s and CPU per request by at most this
RATE_GOAL = 0.10  # the admitted rate within this of the configured limit
KEY = "sk-bench-limits-0123456789"


def limits_on(overrides: dict[str, Any], requests_per_min: int, tokens_per_min: int) -> dict[str, Any]:
    gw = overrides.get("gateway", {})
    limits = {**gw.get("limits", {}), "requests_per_min": requests_per_min, "tokens_per_min": tokens_per_min,
              "share_across_replicas": True}  # fmt: skip
    return {**overrides, "gateway": {**gw, "limits": limits}}


async def admitted_rate(
    url: str, model: str, key: str | None, per_min: int, *, offered_x: float = 3.0, window_s: float = 30.0,
    settle_s: float = 5.0, drain_concurrency: int = 8, drain_timeout_s: float = 120.0,
) -> dict[str, Any]:  # fmt: skip
    """Requests/min admitted by a gateway whose limit for ``key`` is ``per_min``, in steady state.

    First the tenant's bucket (one minute of burst) is drained: ``drain_concurrency`` clients back
    to back until the first 429. Then requests go out open-loop at ``offered_x`` × the limit; after
    ``settle_s`` (blocks leased before are spent by then) the 200s sent during ``window_s`` are
    counted. Anything but 200 or 429 counts as an error."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        first_refusal: list[str] = []

        async def one() -> int:
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    raw = await r.read()
                    if r.status == 429 and not first_refusal:
                        first_refusal.append(raw[:300].decode(errors="replace"))
                    return r.status
            except (aiohttp.ClientError, TimeoutError):
                return 0

        drained = asyncio.Event()
        burst = [0, 0]  # admitted, errors
        t_drain = time.monotonic()

        async def drainer() -> None:
            while not drained.is_set() and time.monotonic() - t_drain < drain_timeout_s:
                status = await one()
                if status == 429:
                    drained.set()
                else:
                    burst[0 if status == 200 else 1] += 1

        await asyncio.gather(*(drainer() for _ in range(drain_concurrency)))
        if not drained.is_set():
            raise RuntimeError(f"no 429 within {drain_timeout_s:g} s of back-to-back requests: is the limit on?")
        drain_s = time.monotonic() - t_drain
        rate_s = offered_x * per_min / 60.0
        n = int((settle_s + window_s) * rate_s)
        sent: list[tuple[float, int]] = []
        t0 = time.monotonic()

        async def fire(i: int) -> None:
            at = i / rate_s
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            sent.append((at, await one()))

        await asyncio.gather(*(fire(i) for i in range(n)))
    window = [s for at, s in sent if settle_s <= at < settle_s + window_s]
    admitted = window.count(200)
    per_min_admitted = admitted / window_s * 60.0
    return {
        "limit_per_min": per_min,
        "offered_per_min": round(rate_s * 60.0, 1),
        "window_s": window_s,
        "sent": len(window),
        "admitted": admitted,
        "refused_429": window.count(429),
        "errors": len(window) - admitted - window.count(429),
        "admitted_per_min": round(per_min_admitted, 1),
        "admitted_vs_limit": round(per_min_admitted / per_min, 3),
        "burst_admitted": burst[0],
        "burst_errors": burst[1],
        "drain_s": round(drain_s, 1),
        "first_refusal": first_refusal[0] if first_refusal else None,
    }


def _tax_pair(seconds: float, concurrency: int, max_tokens: int, logs: Path) -> dict[str, Any]:
    spec = Spec(url="", model="", mode="step", schedule=[[seconds, concurrency]], concurrency=concurrency,
                warmup=64, max_tokens=max_tokens)  # fmt: skip
    first = run_arm(ARMS["b"], spec, logs, keep_results=True)
    s = first.get("summary")
    if not s:
        return {"off": first, "on": {"status": "not measured: the limits-off arm failed"}}
    rpm = max(60, int(2 * s["requests_per_s"] * 60))
    tpm = max(60, int(2 * s["tokens_per_s"] * 60 * 1.5))  # estimate + output tokens, both charged
    label = f"(b) with per-tenant limits on (requests/min {rpm}, tokens/min {tpm}, shared)"
    on_arm = Arm("b-limits", label, lambda g, ov, lg: start_ours_ray(g, limits_on(ov, rpm, tpm), lg))
    on = pooled(*(run_arm(on_arm, spec, logs, repeat=i, keep_results=True) for i in range(2)))
    off = pooled(first, run_arm(ARMS["b"], spec, logs, repeat=1, keep_results=True))
    s = off.get("summary")
    out: dict[str, Any] = {"off": off, "on": on, "requests_per_min": rpm, "tokens_per_min": tpm}
    so = on.get("summary")
    if so and s:
        out["tokens_per_s_on_vs_off"] = ratio(so["tokens_per_s"], s["tokens_per_s"])
        out["stack_cpu_on_vs_off"] = ratio(on.get("stack_cpu_ms_per_request"), off.get("stack_cpu_ms_per_request"))
        out["ttft_p50_ms_added"] = (
            None if so["ttft_p50_ms"] is None or s["ttft_p50_ms"] is None else so["ttft_p50_ms"] - s["ttft_p50_ms"]
        )
        out["refused"] = so["errors"]
    return out


def _rate_on_three_replicas(per_min: int, window_s: float, logs: Path) -> dict[str, Any]:
    ov = limits_on(sim_overrides(zero_delay=True), per_min, 10**9)
    # Ray Serve's proxy spreads requests over the replicas (direct ingress would name one replica's port)
    ov["gateway"] = {**ov["gateway"], "replicas": 3, "ingress": "proxy", "api_keys": {"keys": [KEY], "required": True}}
    g = ProcGroup()
    try:
        drv, _ = ray_proc("ours", ov, logs / "limits-3-replicas")
        url = g.add(drv).wait_log("ready url=", START_TIMEOUT_S * 2)
        drv.wait_http(url + "/ready", START_TIMEOUT_S)
        model = bench_settings(ov).model.served_name or ""
        return {"status": "measured", "gateway_replicas": 3,
                **asyncio.run(admitted_rate(url, model, KEY, per_min, window_s=window_s))}  # fmt: skip
    except Exception as exc:  # a missing or broken piece is reported, never invented
        return {"status": f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    finally:
        g.stop_all()


def run(logs: Path, *, seconds: float = 20.0, concurrency: int = 64, max_tokens: int = 128,
        per_min: int = 600, window_s: float = 60.0) -> dict[str, Any]:  # fmt: skip
    print(f"[limits] stack tax, limits off, on, on, off, {seconds:g} s each …", flush=True)
    tax = _tax_pair(seconds, concurrency, max_tokens, logs / "limits")
    print(f"[limits] admitted rate, 3 gateway replicas, limit {per_min}/min …", flush=True)
    rate = _rate_on_three_replicas(per_min, window_s, logs / "limits")
    goals = []
    for name, value, ok in (
        ("tokens/s limits on ÷ off ≥ 0.95", tax.get("tokens_per_s_on_vs_off"), lambda v: v >= 1 - TAX_GOAL),
        ("stack CPU/request limits on ÷ off ≤ 1.05", tax.get("stack_cpu_on_vs_off"), lambda v: v <= 1 + TAX_GOAL),
        ("admitted ÷ limit within 1 ± 0.10 (3 replicas)", rate.get("admitted_vs_limit"),
         lambda v: abs(v - 1) <= RATE_GOAL),
    ):  # fmt: skip
        goals.append({"goal": name, "value": value, "met": None if value is None else bool(ok(value))})
    return {"status": "measured", "seconds_per_arm": seconds, "concurrency": concurrency, "max_tokens": max_tokens,
            "tax": tax, "rate": rate, "goals": goals}  # fmt: skip
