"""The results: machine facts, then one markdown table per measurement, and the same data as JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    import psutil

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = "not installed"
    try:
        from importlib.metadata import version

        router_version = version("sglang-router")
    except Exception:
        router_version = "not installed"
    return {
        "uname": " ".join(platform.uname()),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "ray": ray_version,
        "sglang_router": router_version,
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def sig(v: float | None, digits: int = 4) -> str:
    """``digits`` significant figures (seconds and tokens/s share a column)."""
    return "—" if v is None else f"{v:.{digits}g}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(out)


def goals_md(goals: list[dict[str, Any]]) -> str:
    if not goals:
        return ""
    rows = [[g["goal"], fmt(g["value"], 2), fmt(g["met"]) if g["met"] is not None else "not measured"] for g in goals]
    return "\n\n" + table(["goal", "value", "met"], rows)


RATE_LABELS = {"mtp": "MTP on: one SSE event per verify step (SGLang's shape)", "token": "MTP off: one event per token"}


def stack_md(st: dict[str, Any]) -> str:
    w = st["workload"]
    size = f"{w['duration_s']:g} s" if w.get("duration_s") else f"{w['requests']} requests"
    low = ""
    if w.get("low_concurrency"):
        pace = w.get("low_pace") or {}
        tpot = pace.get("fixed_tpot_s")
        low = (f"; then, for added TTFT where the CPU is not saturated, {w['low_concurrency']} streams × "
               f"{w.get('low_max_tokens')} tokens for the same time against a restart of the arm whose engine "
               "decodes at a fixed pace" + (f" ({1 / tpot:g} tokens/s per stream, first token at once)" if tpot else "")
               + " (*busy %*: the CPU all measured processes used, in % of the machine's cores)")  # fmt: skip
    head = (
        f"Workload per arm: {w['concurrency']} concurrent closed-loop streams for {size}{low}; {w['max_tokens']} "
        f"output tokens (`ignore_eos`), after {w['warmup_requests']} warm-up requests; engine: {w['engine']}. "
        "Tokens are counted from each stream's usage.\n"
        "CPU columns: milliseconds of CPU per completed request, per process tree (psutil user+system deltas "
        "over the measured window); *stack* = gateway + Ray + router processes; *net of idle* subtracts the "
        "CPU each stack burns with no request in flight (read for 10 s before the window; *stack idle CPU %* is "
        "that rate, in % of one core).\n"
    )
    if w.get("repeated_arms"):
        keys = " and ".join(f"({k})" for k in w["repeated_arms"])
        head += (f"{keys}, the arms the goals compare, ran twice per event rate: in the round's order, "
                 "then once more in reverse after the last arm; their two windows are pooled "
                 "(*window s* is the sum).\n")  # fmt: skip
    out = [head]
    for rate, r in st["rates"].items():
        out.append(f"\n**Event rate: {RATE_LABELS.get(rate, rate)}**\n\n" + _stack_rate_md(r))
    return "".join(out)


def _stack_rate_md(st: dict[str, Any]) -> str:
    rows = []
    for key, m in st["arms"].items():
        s = m.get("summary")
        if not s:
            rows.append([f"({key}) {m['label']}", m["status"], *[""] * 14])
            continue
        cpu = m["cpu_ms_per_request"]
        vs = st["vs_direct"].get(key, {})
        low = (m.get("low") or {}).get("summary") or {}
        rows.append(
            [
                f"({key}) {m['label']}",
                s["tokens_per_s"],
                s["requests_per_s"],
                fmt(m.get("wall_s"), 1),
                fmt(s.get("tokens_per_event"), 2),
                fmt(vs.get("tokens_per_s_ratio"), 3),
                s["ttft_p50_ms"],
                s["ttft_p99_ms"],
                fmt(low.get("ttft_p50_ms"), 2) + " / " + fmt(low.get("ttft_p99_ms"), 2) if low else "—",
                fmt(100 * m["low"]["cpu_busy_share"], 1) if low and m["low"].get("cpu_busy_share") is not None else "—",
                fmt(vs.get("low_added_ttft_p50_ms"), 2) + " / " + fmt(vs.get("low_added_ttft_p99_ms"), 2)
                if low
                else "—",
                fmt(m.get("stack_cpu_ms_per_request"), 3),
                fmt(m.get("stack_cpu_ms_per_request_net"), 3),
                fmt(100 * m["stack_idle_cpu_per_s"], 1) if m.get("stack_idle_cpu_per_s") is not None else "—",
                fmt(cpu.get("engine"), 3),
                fmt(cpu.get("client"), 3),
            ]
        )
    hdr = [
        "arm",
        "tokens/s",
        "req/s",
        "window s",
        "tokens/event",
        "× (a) tok/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "low-conc. TTFT p50 / p99 ms",
        "low-conc. busy %",
        "added p50 / p99 ms",
        "stack CPU-ms/req",
        "net of idle",
        "stack idle CPU %",
        "engine CPU-ms/req",
        "client CPU-ms/req",
    ]
    errors = [f"- ({k}): {m['summary']['errors']} failed requests, first: {m['summary']['first_error']}"
              for k, m in st["arms"].items() if m.get("summary") and m["summary"]["errors"]]  # fmt: skip
    tail = ("\n\n" + "\n".join(errors)) if errors else ""
    return table(hdr, rows) + tail + goals_md(st.get("goals", [])) + profiles_md(st.get("profiles", {}))


def profiles_md(profiles: dict[str, Any]) -> str:
    out = []
    for key, p in profiles.items():
        if "samples" not in p:
            out.append(f"\n\nProfile of ({key}): {p.get('status', 'not taken')}")
            continue
        rows = [[f"`{f}`", f"{100 * share:.1f} %"] for f, share in p["self"][:12]]
        incl = [[f"`{f}`", f"{100 * share:.1f} %"] for f, share in p["inclusive"][:12]]
        out.append(
            f"\n\n**Profile of ({key})** — py-spy on `{p['process']}` during a separate repeat of the same load "
            f"({p['samples']} samples; raw: `{p['raw']}`).\n\nTop self time:\n\n"
            + table(["frame", "share"], rows)
            + "\n\nTop inclusive time (frames on ≥ 95 % of samples, the server loop, left out):\n\n"
            + table(["frame", "share"], incl)
        )
    return "".join(out)


def routing_md(rt: dict[str, Any]) -> str:
    w = rt["workload"]
    head = (
        f"Workload: {w['conversations']} coding-agent conversations × {w['turns']} turns "
        f"({w['concurrent_conversations']} at once, {w['max_tokens']} output tokens per turn; each turn adds the "
        f"answer and a tool result), {w['engines']} engines: {w['engine']}; gateway: {w['gateway']}. Cache hit "
        "rate = cached prompt tokens ÷ prompt tokens, from each response's usage."
        + (
            f" Each policy ran the workload {w['rounds']} times (policies in turn, the order reversed each round), "
            "fresh engines every time; its rounds are pooled."
            if w.get("rounds", 1) > 1
            else ""
        )
        + "\n\n"
    )
    rows = []
    for policy, p in rt["policies"].items():
        if p.get("status") != "measured":
            rows.append([policy, p.get("status", "not measured"), "", "", "", "", "", ""])
            continue
        per = " / ".join(f"{e['requests']:.0f}" for e in p["per_engine"])
        eng = " / ".join(fmt(_mean_ms(e, "ttft"), 1) for e in p["per_engine"])
        rows.append([policy, fmt(p["cache_hit_rate"], 3), p["ttft_p50_ms"], p["ttft_p95_ms"], eng, p["tokens_per_s"],
                     f"{per} (max/mean {fmt(p['max_over_mean_requests'], 2)})", p["errors"]])  # fmt: skip
    hdr = ["policy", "cache hit rate", "TTFT p50 ms", "TTFT p95 ms", "engine TTFT mean ms", "tokens/s",
           "requests per engine", "errors"]  # fmt: skip
    note = "\n\n*Engine TTFT*: each engine's own `sglang:time_to_first_token_seconds` mean, per engine."
    split = []
    for policy, p in rt["policies"].items():
        turns = p.get("by_turn") or {}
        if turns:
            cells = [
                (fmt(t["cache_hit_rate"], 3), t["ttft_p50_ms"], t["ttft_p95_ms"])
                for t in (turns["first"], turns["later"])
            ]
            split.append([policy, *cells[0], *cells[1]])
    if split:
        cols = ["policy"] + [
            f"{w}: {m}" for w in ("first", "later") for m in ("hit rate", "TTFT p50 ms", "TTFT p95 ms")
        ]
        note += (
            "\n\nBy turn (the same requests): a conversation's first turn (only the shared system prompt can be "
            "cached, whatever engine it goes to) and its later turns (where the policy decides what is cached).\n\n"
            + table(cols, split)
        )
    return head + table(hdr, rows) + note + goals_md(rt.get("goals", []))


def _mean_ms(engine: dict[str, Any], name: str) -> float | None:
    """Mean of an engine histogram from its sum and count (absent in results of older runs)."""
    n = engine.get(f"{name}_count")
    return 1000 * engine[f"{name}_s_sum"] / n if n else None


def fidelity_md(fd: dict[str, Any]) -> str:
    head = f"Source: `{fd['source']}` (the simulator's timing model against the published cells).\n\n"
    rows = [[c["cell"], c["metric"] or "", fmt(c["predicted"], 2), fmt(c["published"], 2),
             fmt(None if c["relative_error"] is None else 100 * c["relative_error"], 1), fmt(c["within"])]
            for c in fd["cells"]]  # fmt: skip
    return (
        head
        + table(["cell", "metric", "predicted", "published", "error %", "within ±15 %"], rows)
        + goals_md(fd.get("goals", []))
    )


def autoscaling_md(a: dict[str, Any]) -> str:
    w = a["workload"]
    sched = " → ".join(f"{c:g} streams for {d:g} s" for d, c in w["schedule"])
    asc = w["autoscaling"]
    head = (
        f"Our Ray Serve app (gateway ingress + engine replicas), {w['engine']}; closed-loop streams: {sched}; "
        f"{w['max_tokens']} output tokens per request. Autoscaling: {asc['min_replicas']}–{asc['max_replicas']} "
        f"replicas, target {asc['target_load_per_replica']:g} engine requests per replica, upscale delay "
        f"{asc['upscale_delay_s']:g} s, downscale delay {asc['downscale_delay_s']:g} s. TTFT SLO "
        f"{w['ttft_slo_ms']:g} ms. A replica *serves* once its engine is published in the endpoint registry.\n\n"
    )
    rows = [
        ["serving replicas when the step starts", fmt(a["replicas_at_step"], 0)],
        ["first new replica serving after the step", f"{fmt(a['first_new_replica_serving_s'], 1)} s"],
        ["peak serving replicas (reached after)",
         f"{fmt(a['peak_replicas_serving'], 0)} ({fmt(a['peak_reached_s'], 1)} s)"],
        ["TTFT SLO attainment before the step", fmt(a["slo_attainment_base"], 3)],
        ["TTFT SLO attainment during the step", fmt(a["slo_attainment_step"], 3)],
        ["TTFT p50 / p99 during the step", f"{fmt(a['step_ttft_p50_ms'])} / {fmt(a['step_ttft_p99_ms'])} ms"],
        ["requests during the step (errors overall)", f"{a['step_requests']} ({a['errors']})"],
        [f"serving / RUNNING replicas {a['observed_after_load_s']:g} s after the load ends",
         f"{fmt(a['replicas_at_end'], 0)} / {fmt(a.get('running_at_end'), 0)}"],
    ]  # fmt: skip
    tl = ", ".join(f"{p['t_s']:g}s:{p['endpoints']}/{p['running']}" for p in a.get("timeline", []))
    return head + table(["", "value"], rows) + f"\n\nTimeline (s from load start: serving/RUNNING): {tl}"


def admission_md(ad: dict[str, Any]) -> str:
    head = (
        "Virtual-time closed-loop replay through the simulator's scheduler (admission, retraction, "
        f"prefix cache) and timing model, qwen3.6-27b, MTP. Goal: {ad['goal']}.\n\n"
    )
    rows = []
    for c in ad["cells"]:
        d, b, f = c["default"], c["best"], c["reserve_full_context"]
        rows.append([c["layout"], c["scenario"], c["concurrency"], f"{d['max_running']}", fmt(d["output_tok_s"], 0),
                     f"{d['failed']} / {d['retractions']}", f"{b['max_running']}", fmt(b["output_tok_s"], 0),
                     f"{f['max_running']}", fmt(f["output_tok_s"], 0), f"{100 * c['default_vs_best']:.1f}",
                     "yes" if c["ok"] else "NO"])  # fmt: skip
    hdr = ["layout", "scenario", "c", "default mr", "tok/s", "failed / retracted", "best mr", "tok/s",
           "full-context mr", "tok/s", "default/best %", "goal"]  # fmt: skip
    out = head + table(hdr, rows)
    sens = ad.get("share_sensitivity")
    if sens:
        lays = list(sens[0]["defaults"])
        out += (f"\n\nThe default at other `memory.kv_share_tokens` (this run's: {ad.get('kv_share_tokens')}; "
                "0 = the state slots alone):\n\n")  # fmt: skip
        out += table(["kv_share_tokens", *(f"default mr {lay}" for lay in lays), "cells met", "worst default/best %"],
                     [[r["kv_share_tokens"], *(r["defaults"][lay] for lay in lays), f"{r['cells_met']} / {r['cells']}",
                       f"{100 * r['worst_default_vs_best']:.1f}"] for r in sens])  # fmt: skip
    return out


def section_status_md(data: dict[str, Any]) -> str:
    return f"{data.get('status', 'not measured')}"


def llama_builds_md(lb: dict[str, Any]) -> str:
    head = "Single stream, SmolLM2-135M Q4_1, 128-token completions back to back, arms alternating.\n\n"
    rows = [[r["config"], fmt(r["tok_s"]), fmt(r["engine_tok_s"]), fmt(r["x_native"], 2), fmt(r["seconds"], 0),
             f"`{r['flags']}`"] for r in lb["arms"]]  # fmt: skip
    return head + table(["build", "tokens/s", "engine tokens/s", "× native", "measured s", "CPU backend flags"], rows)


def fair_queuing_md(fq: dict[str, Any]) -> str:
    head = ("A light interactive tenant (2 streams) alone, then beside a batch tenant at 10× its load: with the "
            "engine's own FIFO queue, and with the gateway's weighted fair admission.\n\n")  # fmt: skip
    rows = [[arm, fmt(fq[arm]["light_ttft_p50_s"], 3), fmt(fq[arm].get("light_ttft_p50_vs_alone", 1.0), 2),
             fq[arm]["light_requests"], fq[arm]["batch_requests"], len(fq[arm]["errors"])]
            for arm in ("alone", "fifo", "fair") if arm in fq]  # fmt: skip
    return head + table(["arm", "light TTFT p50 s", "× alone", "light requests", "batch requests", "errors"], rows)


def limits_md(lm: dict[str, Any]) -> str:
    tax, rate = lm["tax"], lm["rate"]
    head = (f"Stack-tax arm (b), {lm['concurrency']} closed-loop streams × {lm['max_tokens']} tokens for "
            f"{lm['seconds_per_arm']:g} s per window, per-tenant limits off, on, on, off (each setting's two windows "
            "pooled; shared across replicas, set to "
            f"2× the rate measured without them: {tax.get('requests_per_min')} requests/min, "
            f"{tax.get('tokens_per_min')} tokens/min). Then 3 gateway replicas offered 3× a requests/min "
            "limit.\n\n")  # fmt: skip
    rows = []
    for arm in ("off", "on"):
        m = tax.get(arm, {})
        s = m.get("summary")
        rows.append([arm, *([s["tokens_per_s"], s["ttft_p50_ms"], fmt(m.get("stack_cpu_ms_per_request"), 3),
                             s["errors"]] if s else [m.get("status", "not measured"), "", "", ""])])  # fmt: skip
    out = head + table(["limits", "tokens/s", "TTFT p50 ms", "stack CPU-ms/req", "errors"], rows)
    if rate.get("status") == "measured":
        out += "\n\n" + table(
            ["limit /min", "offered /min", "window s", "admitted", "admitted /min", "× limit", "429s", "errors"],
            [[rate["limit_per_min"], rate["offered_per_min"], rate["window_s"], rate["admitted"],
              rate["admitted_per_min"], fmt(rate["admitted_vs_limit"], 3), rate["refused_429"], rate["errors"]]],
        )  # fmt: skip
    else:
        out += f"\n\nAdmitted rate: {rate.get('status')}"
    return out + goals_md(lm.get("goals", []))


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "stack_tax": stack_md,
    "routing": routing_md,
    "fidelity": fidelity_md,
    "autoscaling": autoscaling_md,
    "llama_builds": llama_builds_md,
    "admission": admission_md,
    "fair_queuing": fair_queuing_md,
    "limits": limits_md,
}
TITLES = {
    "stack_tax": "1. Stack tax",
    "routing": "2. Routing gain",
    "fidelity": "3. Simulator fidelity",
    "autoscaling": "4. Autoscaling under a step",
    "llama_builds": "5. llama-server builds (tokens/s per CPU configuration)",
    "admission": "6. Default max_running_requests vs a sweep",
    "fair_queuing": "7. Fair admission under a noisy neighbour",
    "limits": "8. Per-tenant limits: stack tax on vs off, admitted rate with 3 gateway replicas",
}


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# qwen-serve benchmark results",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['started_at']} ({result['duration_s']:.0f} s{', quick run' if result['quick'] else ''})",
        f"- machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB; `{m['uname']}`",
        f"- Python {m['python']}, Ray {m['ray']}, sglang-router {m['sglang_router']}",
        f"- load average (1/5/15 min) before: {result['load_before']}, after: {result['load_after']}",
    ]
    for key, title in TITLES.items():
        if key not in result["sections"]:
            continue
        data = result["sections"][key]
        lines += ["", f"## {title}", ""]
        if data.get("status", "measured") != "measured":
            lines.append(section_status_md(data))
        else:
            lines.append(RENDERERS.get(key, lambda d: "```json\n" + json.dumps(d, indent=2) + "\n```")(data))
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    js.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md.write_text(render(result))
    return md, js
