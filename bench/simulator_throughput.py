"""Zero-delay streaming throughput of the simulator (one server process, one event loop = one core).

    .venv/bin/python -m bench.simulator_throughput [--clients 32] [--seconds 5] [--max-tokens 512]

Starts ``python -m serving.engines.simulator --sim-zero-delay`` on a free port, streams chat
completions from N concurrent httpx clients for a few seconds, counts SSE token events (one per
token, as SGLang sends them) and prints tokens/s. The goal is ≥ 5,000 tokens/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer

from bench.procs import free_port

GOAL = 5000.0
LOG_DIR = Path(tempfile.gettempdir())


def start(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The simulator exactly as a replica launches it: argv from the launch-plan builder."""
    from serving.config import load_settings
    from serving.engines import plan_instance

    settings = load_settings(
        overrides={
            "model": {"preset": "qwen3.6-27b"},
            "engine": {"kind": "simulator", "simulator": {"zero_delay": True}},
            "parallelism": {"tp": 8},
            "speculative": {"enabled": False},  # one event per token: the events counted are the tokens
        },
        env={},
    )
    argv = plan_instance(settings, host="127.0.0.1", port=port).ranks[0].argv
    # stderr to a file: an unread pipe would stall the server once it fills
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"simulator exited; see {LOG_DIR}/simulator-throughput-*.log")
            try:
                if (await c.get(base + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("simulator did not become healthy")


async def client(base: str, stop_at: float, max_tokens: int, counts: list[int]) -> None:
    body = {
        "messages": [{"role": "user", "content": "benchmark"}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    async with httpx.AsyncClient(timeout=60) as c:
        while time.monotonic() < stop_at:
            async with c.stream("POST", base + "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"delta":{"content"' in line:
                        counts[0] += 1
                    if time.monotonic() >= stop_at:
                        break


@dataclass(frozen=True)
class Args:
    clients: int
    seconds: float
    max_tokens: int
    url: str | None


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def main(
    clients: Annotated[int, typer.Option()] = 32,
    seconds: Annotated[float, typer.Option()] = 5.0,
    max_tokens: Annotated[int, typer.Option()] = 512,
    url: Annotated[str | None, typer.Option(help="benchmark a running simulator instead of starting one")] = None,
) -> None:
    """Zero-delay streaming tokens/s of one simulator process."""
    raise typer.Exit(asyncio.run(measure(Args(clients, seconds, max_tokens, url))))


async def measure(a: Args) -> int:
    proc = None
    base = a.url
    if base is None:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = LOG_DIR / f"simulator-throughput-{port}.log"
        proc = start(port, log)
    try:
        await wait_ready(base, proc) if proc else None
        counts = [0]
        t0 = time.monotonic()
        stop_at = t0 + a.seconds
        await asyncio.gather(*(client(base, stop_at, a.max_tokens, counts) for _ in range(a.clients)))
        dt = time.monotonic() - t0
        rate = counts[0] / dt
        cpu = None
        if proc is not None:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().split()  # noqa: ASYNC240 - after the run
            cpu = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        print(
            json.dumps(
                {
                    "clients": a.clients,
                    "seconds": round(dt, 2),
                    "tokens": counts[0],
                    "tokens_per_s": round(rate),
                    "server_cpu_s": cpu,
                    "goal": GOAL,
                    "meets_goal": rate >= GOAL,
                }
            )
        )
        return 0 if rate >= GOAL else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    app()
