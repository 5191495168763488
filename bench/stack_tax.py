"""Stack tax: the same zero-delay simulator reached five ways, one identical workload each.

(a) direct to the engine; (b) our Ray Serve app (gateway ingress + engine replica); (b0) our gateway
on plain uvicorn in front of the engine (the gateway's own cost, no Ray); (c) sglang-router (Rust) in
front of the engine; (d) the naive Ray path (default proxy, per-token DeploymentHandle streaming).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Spec
from bench.load import measure
from bench.procs import ProcGroup
from bench.profiling import Profiler, find_pid, summarize_collapsed
from bench.servers import (
    ENGINE_RULES,
    bench_settings,
    engine_health_url,
    engine_proc,
    gateway_proc,
    ray_proc,
    router_proc,
    sim_overrides,
)
from bench.stats import added, ratio

START_TIMEOUT_S = 180.0


def _models_ok(url: str) -> str:
    return url + "/v1/models"


def start_direct(g: ProcGroup, ov: dict[str, Any], logs: Path) -> str:
    eng, url = engine_proc(ov, logs)
    g.add(eng).wait_http(engine_health_url(url), START_TIMEOUT_S)
    return url


def start_gateway_uvicorn(g: ProcGroup, ov: dict[str, Any], logs: Path) -> str:
    eng_url = start_direct(g, ov, logs)
    gw, url = gateway_proc(ov, [eng_url], logs)
    g.add(gw).wait_http(_models_ok(url), START_TIMEOUT_S)
    return url


def start_ours_ray(g: ProcGroup, ov: dict[str, Any], logs: Path) -> str:
    drv, _ = ray_proc("ours", ov, logs)
    url = g.add(drv).wait_log("ready url=", START_TIMEOUT_S * 2)
    drv.wait_http(url + "/ready", START_TIMEOUT_S)
    return url


def start_router(g: ProcGroup, ov: dict[str, Any], logs: Path) -> str:
    eng_url = start_direct(g, ov, logs)
    rt, url = router_proc([eng_url], logs)
    g.add(rt).wait_http(_models_ok(url), START_TIMEOUT_S)
    return url


def start_naive_ray(g: ProcGroup, ov: dict[str, Any], logs: Path) -> str:
    eng_url = start_direct(g, ov, logs)
    drv, _ = ray_proc("naive", ov, logs, engine_url=eng_url)
    return g.add(drv).wait_log("ready url=", START_TIMEOUT_S * 2)


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    start: Callable[[ProcGroup, dict[str, Any], Path], str]
    profile_needle: str | None = None  # the stack process py-spy samples when a goal is missed


ARMS: dict[str, Arm] = {
    a.key: a
    for a in (
        Arm("a", "direct to the engine", start_direct),
        Arm("b", "our Ray Serve app (gateway ingress + engine replica)", start_ours_ray, "ServeReplica:bench:gateway"),
        Arm("b0", "our gateway on plain uvicorn (no Ray)", start_gateway_uvicorn, "bench.gateway_server"),
        Arm("c", "sglang-router 0.3.2 (Rust) in front of the engine", start_router),
        Arm("d", "naive Ray: default proxy + per-token DeploymentHandle stream", start_naive_ray),
    )
}

# Roles that are the serving stack's own overhead (not the engine, not the load client).
STACK_ROLES = ("gateway", "ray", "router")


def run_arm(arm: Arm, spec_base: Spec, logs: Path, *, profile: bool = False) -> dict[str, Any]:
    ov = sim_overrides(zero_delay=True)
    g = ProcGroup()
    t0 = time.monotonic()
    log_dir = logs / (f"{arm.key}-profile" if profile else arm.key)
    try:
        url = arm.start(g, ov, log_dir)
        started_s = time.monotonic() - t0
        spec = Spec(**{**spec_base.__dict__, "url": url, "model": bench_settings(ov).model.served_name or ""})
        profiler = None
        if profile:
            pid = find_pid(g.procs, arm.profile_needle or "")
            if pid is None:
                raise RuntimeError(f"no process matching {arm.profile_needle!r} to profile")
            profiler = Profiler(pid, log_dir / "py-spy.collapsed")
        m = measure(spec, g.procs, log_dir, rules=ENGINE_RULES, profiler=profiler)
        if profiler:
            return {
                "arm": arm.key,
                "process": arm.profile_needle,
                "raw": str(profiler.out),
                **summarize_collapsed(profiler.out.read_text() if profiler.out.exists() else ""),
            }
        m.pop("results")
        m["stack_cpu_ms_per_request"] = _stack_cpu(m["cpu_ms_per_request"])
        m.update(status="measured", label=arm.label, start_s=round(started_s, 1))
        return m
    except Exception as exc:  # a missing or broken piece is reported, never invented
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "error.txt").write_text(traceback.format_exc())
        return {"status": f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", "label": arm.label}
    finally:
        g.stop_all()


def _stack_cpu(per_role: dict[str, float | None]) -> float | None:
    vals = [v for r, v in per_role.items() if r in STACK_ROLES and v is not None]
    return sum(vals) if vals else None


def compare(arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios and added latency of every arm over (a), and the issue's goals."""
    base = arms.get("a", {})
    bs = base.get("summary") or {}
    rows: dict[str, Any] = {}
    for key, m in arms.items():
        s = m.get("summary")
        if not s:
            continue
        rows[key] = {
            "tokens_per_s_ratio": ratio(s["tokens_per_s"], bs.get("tokens_per_s")),
            "added_ttft_p50_ms": added(s["ttft_p50_ms"], bs.get("ttft_p50_ms")),
            "added_ttft_p99_ms": added(s["ttft_p99_ms"], bs.get("ttft_p99_ms")),
        }
    ours_key = "b" if "b" in rows else ("b0" if "b0" in rows else None)
    goals: list[dict[str, Any]] = []
    if ours_key:
        r = rows[ours_key]
        goals.append(_goal(f"({ours_key})/(a) tokens/s ≥ 0.8", r["tokens_per_s_ratio"], lambda v: v >= 0.8))
        goals.append(_goal(f"({ours_key}) added TTFT p50 ≤ 2 ms", r["added_ttft_p50_ms"], lambda v: v <= 2.0))
        goals.append(_goal(f"({ours_key}) added TTFT p99 ≤ 10 ms", r["added_ttft_p99_ms"], lambda v: v <= 10.0))
        ours_cpu = arms[ours_key].get("stack_cpu_ms_per_request")
        router_cpu = arms.get("c", {}).get("stack_cpu_ms_per_request")
        goals.append(
            _goal(f"({ours_key}) stack CPU/request ≤ 2× router's", ratio(ours_cpu, router_cpu), lambda v: v <= 2.0)
        )
    return {"vs_direct": rows, "ours": ours_key, "goals": goals}


def _goal(name: str, value: float | None, test: Callable[[float], bool]) -> dict[str, Any]:
    return {"goal": name, "value": value, "met": None if value is None else bool(test(value))}


def run(spec_base: Spec, logs: Path, only: list[str] | None = None, *, profile: bool = False) -> dict[str, Any]:
    arms: dict[str, dict[str, Any]] = {}
    for key, arm in ARMS.items():
        if only and key not in only:
            continue
        print(f"[stack tax] ({key}) {arm.label} …", flush=True)
        arms[key] = run_arm(arm, spec_base, logs)
        print(f"[stack tax] ({key}) {_brief(arms[key])}", flush=True)
    cmp = compare(arms)
    profiles: dict[str, Any] = {}
    missed = any(g["met"] is False for g in cmp["goals"])
    if (missed or profile) and cmp["ours"]:
        ours = ARMS[cmp["ours"]]
        print(f"[stack tax] profiling ({ours.key}) with py-spy (a separate repeat; not a measurement) …", flush=True)
        profiles[ours.key] = run_arm(ours, spec_base, logs, profile=True)
    return {"workload": _workload(spec_base), "arms": arms, **cmp, "profiles": profiles}


def _workload(spec: Spec) -> dict[str, Any]:
    return {
        "concurrency": spec.concurrency,
        "requests": spec.requests,
        "warmup_requests": spec.warmup,
        "max_tokens": spec.max_tokens,
        "ignore_eos": True,
        "engine": "simulator --sim-zero-delay, qwen3.6-27b preset, tp 8",
    }


def _brief(m: dict[str, Any]) -> str:
    s = m.get("summary")
    if not s:
        return m["status"]
    return (
        f"{s['tokens_per_s']:.0f} tok/s, {s['requests_per_s']:.1f} req/s, TTFT p50 {s['ttft_p50_ms']} ms, "
        f"errors {s['errors']}, CPU-ms/req {m['cpu_ms_per_request']}"
    )
