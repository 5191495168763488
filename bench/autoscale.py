"""Autoscaling under a step: our Ray Serve app on the simulator's timing model, closed-loop load
that steps ×4 and then stops. Reports when the new replicas serve (published in the endpoint
registry), TTFT SLO attainment during the step, and the replicas left after the load ends.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from bench.client import Spec
from bench.load import measure
from bench.procs import ProcGroup
from bench.servers import ENGINE_RULES, bench_settings, ray_proc, sim_overrides
from bench.stats import RequestResult, first_time_at_least, percentile, slo_attainment

LINE = re.compile(r"replicas t=(?P<t>[\d.]+) running=(?P<running>\d+) endpoints=(?P<endpoints>\d+)")


def parse_monitor(text: str) -> list[tuple[float, int, int]]:
    """(unix time, RUNNING engine replicas, published endpoints) from the driver's monitor lines."""
    return [(float(m["t"]), int(m["running"]), int(m["endpoints"])) for m in LINE.finditer(text)]


def run(logs: Path, *, base: int, step: int, base_s: float, step_s: float, after_s: float,
        ttft_slo_s: float, max_tokens: int) -> dict[str, Any]:  # fmt: skip
    target = base  # one replica's worth of load before the step: the step asks for ×4 replicas
    ov = sim_overrides(zero_delay=False)
    ov["autoscaling"] = {
        "min_replicas": 1,
        "max_replicas": 4,
        "initial_replicas": 1,
        "target_load_per_replica": float(target),
        "upscale_delay_s": 2.0,
        "downscale_delay_s": max(5.0, after_s / 3),
        "metrics_interval_s": 1.0,
        "look_back_period_s": 3.0,
    }
    g = ProcGroup()
    try:
        drv, _ = ray_proc("ours", ov, logs, monitor_s=0.5)
        url = g.add(drv).wait_log("ready url=", 360)
        drv.wait_http(url + "/ready", 180)
        schedule = [[base_s, base], [step_s, step], [after_s, 0]]
        spec = Spec(url=url, model=bench_settings(ov).model.served_name or "", mode="step", schedule=schedule,
                    concurrency=step, warmup=base, max_tokens=max_tokens)  # fmt: skip
        t_go = time.time()
        m = measure(spec, g.procs, logs, rules=ENGINE_RULES, timeout_s=base_s + step_s + after_s + 300)
        samples = [(t - t_go, r, e) for t, r, e in parse_monitor(drv.log.read_text(errors="replace")) if t >= t_go]
    finally:
        g.stop_all()
    results: list[RequestResult] = m["results"]
    step_reqs = [r for r in results if r.start_s is not None and base_s <= r.start_s < base_s + step_s]
    base_reqs = [r for r in results if r.start_s is not None and r.start_s < base_s]
    endpoints = [(t, float(e)) for t, _, e in samples]
    at_step = max((e for t, e in endpoints if t <= base_s), default=None)
    t_more = first_time_at_least(endpoints, (at_step or 1) + 1, after=base_s)
    t_max = first_time_at_least(endpoints, max(e for _, e in endpoints) if endpoints else 1, after=base_s)
    end_load = base_s + step_s
    after = [e for t, e in endpoints if t >= end_load]
    ttft = [r.ttft_s * 1000 for r in step_reqs if r.ok and r.ttft_s is not None]
    return {
        "status": "measured",
        "workload": {
            "schedule": schedule,
            "target_load_per_replica": target,
            "ttft_slo_ms": ttft_slo_s * 1000,
            "max_tokens": max_tokens,
            "autoscaling": ov["autoscaling"],
            "engine": "simulator (timing model), qwen3.6-27b preset, tp 8 on logical GPUs",
        },
        "replicas_at_step": at_step,
        "first_new_replica_serving_s": None if t_more is None else t_more - base_s,
        "peak_replicas_serving": max((e for _, e in endpoints), default=None),
        "peak_reached_s": None if t_max is None else t_max - base_s,
        "replicas_at_end": after[-1] if after else None,
        "running_at_end": samples[-1][1] if samples else None,
        "observed_after_load_s": after_s,
        "slo_attainment_base": slo_attainment(base_reqs, ttft_slo_s),
        "slo_attainment_step": slo_attainment(step_reqs, ttft_slo_s),
        "step_ttft_p50_ms": percentile(ttft, 50),
        "step_ttft_p99_ms": percentile(ttft, 99),
        "step_requests": len(step_reqs),
        "errors": m["summary"]["errors"],
        "first_error": m["summary"]["first_error"],
        "timeline": [{"t_s": round(t, 2), "running": r, "endpoints": e} for t, r, e in samples][::4],
    }
