"""Stack tax: the same zero-delay simulator reached five ways, one identical workload each, at two
event rates (SGLang with MTP: one SSE event per verify step; without: one per token).

(a) direct to the engine; (b) our Ray Serve app (gateway ingress + engine replica); (b0) our gateway
on plain uvicorn in front of the engine (the gateway's own cost, no Ray); (c) sglang-router (Rust) in
front of the engine; (d) the naive Ray path (default proxy, per-token DeploymentHandle streaming).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Spec
from bench.load import measure, pool
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


# The event rates a stack relays: SGLang with MTP streams one event per verify step (the
# simulator's steps average its acceptance length, 2.8 tokens); without MTP, one per token.
EVENT_RATES: dict[str, dict[str, Any]] = {
    "mtp": {},
    "token": {"speculative": {"enabled": False}},
}
# Added TTFT is judged where the CPU is not saturated: 4 streams against an engine that decodes at a
# fixed pace (50 tokens/s per stream, first token at once), 16 tokens per answer. The zero-delay
# engine would keep even 4 closed-loop streams CPU-bound, and TTFT would measure the queue for CPU.
LOW_CONCURRENCY = 4
LOW_MAX_TOKENS = 16
LOW_PACE = {"fixed_ttft_s": 0.0, "fixed_tpot_s": 0.02}
MIN_WINDOW_S = 20.0
# The two arms the goals compare, ours and the router, are measured twice per event rate: in the
# round's order, then once more in reverse after the last arm (… b … c … d, c, b), and each one's two
# windows are pooled. A shared VM's speed drifts over a section's minutes; so it falls on both alike.
REPEATED = ("b", "c")
IDLE_S = 10.0  # each arm's background CPU is read over this long with no request in flight


def rate_overrides(rate: str, *, paced: bool = False) -> dict[str, Any]:
    sim = sim_overrides(zero_delay=False, **LOW_PACE) if paced else sim_overrides(zero_delay=True)
    return {**sim, **EVENT_RATES[rate]}


def low_spec(spec: Spec) -> Spec:
    """The low-concurrency window of ``spec`` (run against the paced engine)."""
    return Spec(**{**spec.__dict__, "concurrency": LOW_CONCURRENCY, "warmup": 8, "max_tokens": LOW_MAX_TOKENS})


def run_arm(
    arm: Arm, spec_base: Spec, logs: Path, *, rate: str = "mtp", paced: bool = False, profile: bool = False,
    repeat: int = 0, keep_results: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One arm: start it (with ``paced``, against the fixed-pace engine), measure ``spec_base``, stop
    it. ``keep_results``: the per-request results stay in (for :func:`bench.load.pool`)."""
    ov = rate_overrides(rate, paced=paced)
    g = ProcGroup()
    t0 = time.monotonic()
    name = f"{arm.key}-profile" if profile else f"{arm.key}-low" if paced else arm.key
    log_dir = logs / rate / (f"{name}-{repeat + 1}" if repeat else name)
    try:
        url, retried = _start(arm, g, ov, log_dir)
        started_s = time.monotonic() - t0
        spec = Spec(**{**spec_base.__dict__, "url": url, "model": bench_settings(ov).model.served_name or ""})
        profiler = None
        if profile:
            pid = find_pid(g.procs, arm.profile_needle or "")
            if pid is None:
                raise RuntimeError(f"no process matching {arm.profile_needle!r} to profile")
            profiler = Profiler(pid, log_dir / "py-spy.collapsed")
        idle_s = 0.0 if profile or paced else IDLE_S
        m = measure(spec, g.procs, log_dir, rules=ENGINE_RULES, profiler=profiler, idle_s=idle_s)
        if profiler:
            return {
                "arm": arm.key,
                "process": arm.profile_needle,
                "raw": str(profiler.out),
                **summarize_collapsed(profiler.out.read_text() if profiler.out.exists() else ""),
            }
        if not keep_results:
            m.pop("results")
        m.update(status="measured", label=arm.label, start_s=round(started_s, 1), start_retried=retried)
        return _derived(m)
    except Exception as exc:  # a missing or broken piece is reported, never invented
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "error.txt").write_text(traceback.format_exc())
        return {"status": f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", "label": arm.label}
    finally:
        g.stop_all()


def _start(arm: Arm, g: ProcGroup, ov: dict[str, Any], log_dir: Path) -> tuple[str, bool]:
    """Start ``arm`` in ``g``; once more after a failed start (e.g. a port taken between choosing it
    and binding it), keeping the first traceback. Returns the URL and whether it retried."""
    try:
        return arm.start(g, ov, log_dir), False
    except Exception:
        g.stop_all()  # empties the group for the second start
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "start-retry.txt").write_text(traceback.format_exc())
        return arm.start(g, ov, log_dir), True


def _derived(m: dict[str, Any]) -> dict[str, Any]:
    """The stack's share of a measured arm's CPU, and how busy the machine was."""
    m["stack_cpu_ms_per_request"] = _stack_cpu(m["cpu_ms_per_request"])
    m["stack_cpu_ms_per_request_net"] = _stack_cpu(m["cpu_ms_per_request_net"] or {})
    m["stack_idle_cpu_per_s"] = _stack_cpu(m["idle_cpu_per_s"] or {})
    # how busy the machine's cores were over the window (every process measured, the client's too)
    m["cpu_busy_share"] = sum(m["cpu_s"].values()) / (m["wall_s"] * (os.cpu_count() or 1))
    return m


def pooled(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two measured runs of one arm as one (:func:`bench.load.pool`); a failed run is reported as is."""
    runs = [first, second]
    failed = next((m for m in runs if m.get("status") != "measured"), None)
    if failed is not None:
        return failed
    m = pool(runs)
    m.pop("results")
    keep = ("status", "label", "start_s", "start_retried")
    m.update({k: first[k] for k in keep})
    return _derived(m)


def _stack_cpu(per_role: dict[str, float | None]) -> float | None:
    vals = [v for r, v in per_role.items() if r in STACK_ROLES and v is not None]
    return sum(vals) if vals else None


def compare(arms: dict[str, dict[str, Any]], *, min_window_s: float = MIN_WINDOW_S) -> dict[str, Any]:
    """Ratios and added latency of every arm over (a), and the goals: ours against the Rust router
    in throughput and stack CPU per request, added TTFT where the CPU is not saturated (the
    low-concurrency window), and every window long enough to mean something."""
    base = arms.get("a", {})
    bs = base.get("summary") or {}
    bl = (base.get("low") or {}).get("summary") or {}
    rows: dict[str, Any] = {}
    for key, m in arms.items():
        s = m.get("summary")
        if not s:
            continue
        low = (m.get("low") or {}).get("summary") or {}
        rows[key] = {
            "tokens_per_s_ratio": ratio(s["tokens_per_s"], bs.get("tokens_per_s")),
            "added_ttft_p50_ms": added(s["ttft_p50_ms"], bs.get("ttft_p50_ms")),
            "added_ttft_p99_ms": added(s["ttft_p99_ms"], bs.get("ttft_p99_ms")),
            "low_added_ttft_p50_ms": added(low.get("ttft_p50_ms"), bl.get("ttft_p50_ms")),
            "low_added_ttft_p99_ms": added(low.get("ttft_p99_ms"), bl.get("ttft_p99_ms")),
        }
    ours_key = "b" if "b" in rows else ("b0" if "b0" in rows else None)
    goals: list[dict[str, Any]] = []
    if ours_key:
        ours, router = arms[ours_key], arms.get("c", {})
        tps = ratio(ours["summary"]["tokens_per_s"], (router.get("summary") or {}).get("tokens_per_s"))
        goals.append(_goal(f"({ours_key})/(c) tokens/s ≥ 1.0", tps, lambda v: v >= 1.0))
        cpu = ratio(ours.get("stack_cpu_ms_per_request"), router.get("stack_cpu_ms_per_request"))
        goals.append(_goal(f"({ours_key}) stack CPU/request ≤ 1.25× router's", cpu, lambda v: v <= 1.25))
        net = ratio(ours.get("stack_cpu_ms_per_request_net"), router.get("stack_cpu_ms_per_request_net"))
        goals.append(_goal(f"({ours_key}) the same, net of each stack's idle background CPU", net, lambda v: v <= 1.25))
        r = rows[ours_key]
        c = LOW_CONCURRENCY
        goals.append(_goal(f"({ours_key}) added TTFT p50 ≤ 2 ms at concurrency {c}", r["low_added_ttft_p50_ms"],
                           lambda v: v <= 2.0))  # fmt: skip
        goals.append(_goal(f"({ours_key}) added TTFT p99 ≤ 10 ms at concurrency {c}", r["low_added_ttft_p99_ms"],
                           lambda v: v <= 10.0))  # fmt: skip
    windows = [(*m.get("windows_s", [m.get("wall_s")]), (m.get("low") or {}).get("wall_s")) for m in arms.values()]
    walls = [w for ws in windows for w in ws if w is not None]
    if walls:
        goals.append(_goal(f"shortest measured window ≥ {min_window_s:g} s", min(walls), lambda v: v >= min_window_s))
    return {"vs_direct": rows, "ours": ours_key, "goals": goals}


def _goal(name: str, value: float | None, test: Callable[[float], bool]) -> dict[str, Any]:
    return {"goal": name, "value": value, "met": None if value is None else bool(test(value))}


def run(
    spec_base: Spec, logs: Path, only: list[str] | None = None, *, rates: list[str] | None = None,
    low: Spec | None = None, profile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Every arm at each event rate (the first rate also measures the low-concurrency window)."""
    out: dict[str, Any] = {}
    for n, rate in enumerate(rates or list(EVENT_RATES)):
        arms: dict[str, dict[str, Any]] = {}
        chosen = [key for key in ARMS if not only or key in only]
        lows: dict[str, dict[str, Any]] = {}
        for key in chosen:
            arm = ARMS[key]
            print(f"[stack tax] {rate}: ({key}) {arm.label} …", flush=True)
            arms[key] = run_arm(arm, spec_base, logs, rate=rate, keep_results=key in REPEATED)
            print(f"[stack tax] {rate}: ({key}) {_brief(arms[key])}", flush=True)
            if n == 0 and low is not None and "summary" in arms[key]:
                lm = run_arm(arm, low, logs, rate=rate, paced=True)
                print(f"[stack tax] {rate}: ({key}) low concurrency, paced engine: {_brief(lm)}", flush=True)
                lows[key] = {k: lm.get(k) for k in ("status", "summary", "wall_s", "cpu_busy_share")}
        for key in reversed([k for k in chosen if k in REPEATED]):
            again = run_arm(ARMS[key], spec_base, logs, rate=rate, repeat=1, keep_results=True)
            print(f"[stack tax] {rate}: ({key}) again: {_brief(again)}", flush=True)
            arms[key] = pooled(arms[key], again)
            print(f"[stack tax] {rate}: ({key}) both windows: {_brief(arms[key])}", flush=True)
        for key, lm in lows.items():
            arms[key]["low"] = lm
        cmp = compare(arms)
        profiles: dict[str, Any] = {}
        missed = any(g["met"] is False for g in cmp["goals"])
        if n == 0 and (missed or profile) and cmp["ours"]:
            ours = ARMS[cmp["ours"]]
            print(
                f"[stack tax] profiling ({ours.key}) with py-spy (a separate repeat; not a measurement) …", flush=True
            )
            profiles[ours.key] = run_arm(ours, spec_base, logs, rate=rate, profile=True)
        out[rate] = {"arms": arms, **cmp, "profiles": profiles}
    return {"workload": _workload(spec_base, low), "rates": out}


def _workload(spec: Spec, low: Spec | None) -> dict[str, Any]:
    return {
        "concurrency": spec.concurrency,
        "low_concurrency": low.concurrency if low else None,
        "low_max_tokens": low.max_tokens if low else None,
        "low_pace": LOW_PACE if low else None,
        "duration_s": spec.duration_s,
        "requests": spec.requests,
        "repeated_arms": list(REPEATED),
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
        f"{s['tokens_per_s']:.0f} tok/s, {s['requests_per_s']:.1f} req/s over {m['wall_s']:.1f} s, "
        f"{s['tokens_per_event'] or 0:.2f} tokens/event, TTFT p50 {s['ttft_p50_ms']} ms, "
        f"errors {s['errors']}, CPU-ms/req {m['cpu_ms_per_request']}"
    )
