"""Soak: N concurrent streams for M minutes through the whole stack (local Ray, the gateway ingress
on the configured ingress path, a simulated engine replica with its timing model), then a verdict.

Every request must end either complete (``[DONE]``, a finish reason, and exactly the requested
number of completion tokens in the usage chunk) or with an explicit error (a non-200 status, an
error event, a broken connection). A stream that ends normally but short, or a request that never
ends, fails the soak. The resident memory of every process of the stack (Ray's own, the gateway
and engine replicas, the engine, the proxy) is sampled; each one's median over the last window
must stay within ``--max-growth`` of its median over the first window after warm-up.

    make soak                                   # 10 minutes, 64 streams
    .venv/bin/python -m bench.soak --minutes 1  # a short run
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "sk-soak-0123456789"


@dataclass
class Outcomes:
    complete: int = 0
    explicit_error: int = 0
    short: int = 0  # ended like a normal stream, fewer tokens than asked: a silent truncation
    no_done: int = 0  # ended without [DONE] and without an error event: a silent truncation
    timed_out: int = 0  # no end within the client's timeout: a lost request
    errors: dict[str, int] = field(default_factory=dict)
    ttft_s: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def total(self) -> int:
        return self.complete + self.explicit_error + self.short + self.no_done + self.timed_out

    def error(self, what: str) -> None:
        self.explicit_error += 1
        self.errors[what] = self.errors.get(what, 0) + 1


async def one_request(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, out: Outcomes,
                      timeout_s: float) -> None:  # fmt: skip
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"soak {random.random()}"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    done, error, usage, finish, first = False, None, None, None, None
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    out.error(f"http {r.status_code}")
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if first is None:
                        first = time.perf_counter() - t0
                    if line == "data: [DONE]":
                        done = True
                    elif '"error"' in line[:16]:
                        error = json.loads(line[6:])["error"].get("code")
                    elif '"usage":{' in line:
                        usage = json.loads(line[6:])["usage"]
                    elif '"finish_reason":"' in line:
                        finish = json.loads(line[6:])["choices"][0]["finish_reason"]
    except TimeoutError:
        out.timed_out += 1
        return
    except httpx.HTTPError as e:
        out.error(type(e).__name__)
        return
    if error is not None:
        out.error(f"event {error}")
    elif not done or finish is None:
        out.no_done += 1
    elif not usage or usage.get("completion_tokens") != max_tokens:
        out.short += 1
    else:
        out.complete += 1
        out.tokens += max_tokens
        if first is not None:
            out.ttft_s.append(first)


async def drive(url: str, model: str, streams: int, seconds: float, tokens: tuple[int, int], out: Outcomes,
                timeout_s: float) -> None:  # fmt: skip
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10), limits=limits,
                                 headers={"authorization": f"Bearer {KEY}"}) as client:  # fmt: skip

        async def worker(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < stop_at:
                await one_request(client, url, model, rng.randint(*tokens), out, timeout_s)

        await asyncio.gather(*(worker(i) for i in range(streams)))


def stack_processes() -> dict[int, str]:
    """pid → label for every process this driver started (Ray, its workers, engines, HAProxy)."""
    found: dict[int, str] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        label = (cmd[0] if cmd else p.name()).rsplit("/", 1)[-1]
        if label.startswith("python") and len(cmd) > 1:  # name the script or module it runs
            args = [a for a in cmd[1:] if not a.startswith("-")]
            arg = cmd[cmd.index("-m") + 1] if "-m" in cmd[:-1] else (args[0] if args else "")
            label = f"python {arg.rsplit('/', 1)[-1]}"
        if "serving.engines.simulator" in " ".join(cmd):
            label = "engine (simulator)"
        found[p.pid] = f"{label[:60]} [{p.pid}]"
    return found


async def sample_memory(samples: dict[str, list[tuple[float, int]]], t0: float, stop: asyncio.Event,
                        every_s: float) -> None:  # fmt: skip
    labels: dict[int, str] = {}  # first label per pid: a Ray worker's title changes with its current task
    while not stop.is_set():
        now = time.monotonic() - t0
        for pid, title in stack_processes().items():
            label = labels.setdefault(pid, title)
            try:
                rss = psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            samples.setdefault(label, []).append((now, rss))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def memory_verdict(samples: dict[str, list[tuple[float, int]]], warmup_s: float, window_s: float,
                   end_s: float) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for label, pts in sorted(samples.items()):
        first = [r for t, r in pts if warmup_s <= t < warmup_s + window_s]
        last = [r for t, r in pts if t >= end_s - window_s]
        if not first or not last:
            continue  # not alive for the whole run (a Ray idle worker that came or went)
        a, b = statistics.median(first), statistics.median(last)
        rows.append({"process": label, "first_mib": round(a / 2**20, 1), "last_mib": round(b / 2**20, 1),
                     "growth_pct": round(100 * (b - a) / a, 2)})  # fmt: skip
    return rows


def settings_for(args: SoakOptions, port: int) -> Any:
    from serving.config import load_settings

    return load_settings(
        overrides={
            "model": {"preset": args.preset},
            "engine": {"kind": "simulator", "port": 0, "simulator": {"time_scale": args.time_scale}},
            "parallelism": {"tp": args.tp, "gpu_type": args.gpu, "gpus_per_node": 8, "cpus_per_rank": 0.5},
            "gateway": {"port": port, "ingress": args.ingress, "api_keys": {"keys": [KEY], "required": True}},
            "replica": {"startup_timeout_s": 120, "health_check_period_s": 5, "health_check_timeout_s": 10},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "telemetry": {"log_level": "WARNING"},
        },
        env={},
    )


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 10.0
    streams: int = 64
    min_tokens: int = 32
    max_tokens: int = 256
    preset: str = "qwen3.6-27b"
    gpu: str = "h100"
    tp: int = 2
    time_scale: float = 1.0
    ingress: str = "haproxy"
    max_growth: float = 10.0
    sample_s: float = 5.0
    timeout_s: float = 300.0
    out: Path | None = None


class Ingress(StrEnum):
    HAPROXY = "haproxy"
    DIRECT = "direct"
    PROXY = "proxy"


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def main(
    minutes: Annotated[float, typer.Option()] = 10.0,
    streams: Annotated[int, typer.Option()] = 64,
    min_tokens: Annotated[int, typer.Option()] = 32,
    max_tokens: Annotated[int, typer.Option()] = 256,
    preset: Annotated[str, typer.Option()] = "qwen3.6-27b",
    gpu: Annotated[str, typer.Option()] = "h100",
    tp: Annotated[int, typer.Option()] = 2,
    time_scale: Annotated[float, typer.Option(help="simulator: multiply every duration")] = 1.0,
    ingress: Annotated[Ingress, typer.Option()] = Ingress.HAPROXY,
    max_growth: Annotated[float, typer.Option(help="percent of memory growth allowed per process")] = 10.0,
    sample_s: Annotated[float, typer.Option()] = 5.0,
    timeout_s: Annotated[float, typer.Option(help="client timeout per request")] = 300.0,
    out: Annotated[Path | None, typer.Option(help="JSON result (default bench/results/soak-<m>m.json)")] = None,
) -> None:
    """Soak the whole stack on the simulator: lost streams and memory growth per process."""
    args = SoakOptions(minutes, streams, min_tokens, max_tokens, preset, gpu, tp, time_scale, ingress.value,
                       max_growth, sample_s, timeout_s, out)  # fmt: skip
    raise typer.Exit(soak(args))


def soak(args: SoakOptions) -> int:
    from bench.procs import free_port
    from serving.local import local_node_env, serve_forever, shutdown

    seconds = args.minutes * 60
    warmup_s = min(60.0, max(10.0, seconds * 0.1))
    window_s = min(60.0, max(10.0, seconds * 0.15))
    settings = settings_for(args, free_port())
    os.environ.update(local_node_env(settings, os.environ))  # before Ray starts
    import ray

    ray.init(address="local", num_cpus=8, num_gpus=8, include_dashboard=False, log_to_driver=False)
    t_start = time.monotonic()
    try:
        url = serve_forever(settings, block=False)
        print(f"stack up in {time.monotonic() - t_start:.1f}s at {url}; {args.streams} streams for "
              f"{args.minutes:g} min ({settings.model.preset}, {args.gpu} TP={args.tp}, ingress {args.ingress})",
              flush=True)  # fmt: skip
        out = Outcomes()
        samples: dict[str, list[tuple[float, int]]] = {}

        async def run() -> float:
            stop = asyncio.Event()
            t0 = time.monotonic()
            sampler = asyncio.create_task(sample_memory(samples, t0, stop, args.sample_s))
            await drive(url, str(settings.model.served_name), args.streams, seconds,
                        (args.min_tokens, args.max_tokens), out, args.timeout_s)  # fmt: skip
            elapsed = time.monotonic() - t0
            stop.set()
            await sampler
            return elapsed

        elapsed = asyncio.run(run())
    finally:
        shutdown()
    memory = memory_verdict(samples, warmup_s, window_s, seconds)
    lost = out.short + out.no_done + out.timed_out
    worst = max((m["growth_pct"] for m in memory), default=float("nan"))
    ok = lost == 0 and out.total > 0 and bool(memory) and worst <= args.max_growth
    ttft = sorted(out.ttft_s)
    result = {
        "minutes": args.minutes, "streams": args.streams, "elapsed_s": round(elapsed, 1),
        "settings": {"preset": args.preset, "gpu": args.gpu, "tp": args.tp, "time_scale": args.time_scale,
                     "ingress": args.ingress, "tokens": [args.min_tokens, args.max_tokens]},
        "requests": out.total, "complete": out.complete, "explicit_error": out.explicit_error,
        "errors": out.errors, "silently_short": out.short, "no_done": out.no_done, "timed_out": out.timed_out,
        "tokens_per_s": round(out.tokens / elapsed, 1),
        "ttft_p50_s": round(ttft[len(ttft) // 2], 3) if ttft else None,
        "ttft_p99_s": round(ttft[int(len(ttft) * 0.99)], 3) if ttft else None,
        "memory_window_s": window_s, "memory_warmup_s": warmup_s, "memory": memory,
        "worst_growth_pct": worst, "max_growth_pct": args.max_growth, "pass": ok,
    }  # fmt: skip
    path = args.out or RESULTS / f"soak-{args.minutes:g}m.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nrequests {out.total}: complete {out.complete}, explicit errors {out.explicit_error} {out.errors}, "
        f"silently short {out.short}, no [DONE] {out.no_done}, timed out {out.timed_out}; "
        f"{result['tokens_per_s']} tokens/s, TTFT p50 {result['ttft_p50_s']} s, p99 {result['ttft_p99_s']} s"
    )
    print(f"memory (median RSS, first {window_s:g}s after {warmup_s:g}s warm-up vs last {window_s:g}s):")
    for m in memory:
        print(f"  {m['process']:<70} {m['first_mib']:>8} → {m['last_mib']:>8} MiB  {m['growth_pct']:+6.2f} %")
    print(f"{'PASS' if ok else 'FAIL'}: lost/silent {lost}, worst memory growth {worst:+.2f} % "
          f"(limit {args.max_growth:g} %); {path}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    app()
