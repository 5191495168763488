"""Fair admission under a noisy neighbour: a light interactive tenant's TTFT, alone and next to a
batch tenant sending 10× its load, with the gateway's admission queue (weighted fair, interactive
before batch) and without it (every request goes to the engine, whose own queue is FIFO).

The engine is the simulator with its timing model (Qwen3.6-27B, H100 × 8), started from its
launch plan; the gateway runs in this process (``create_app`` over the real engine, the client
through ASGI), so the engine's timing dominates and the 2 shared cores matter little.

``python -m bench.fair_queuing [--seconds 30] [--light 2] [--batch-factor 10]`` prints a table and
writes ``bench/results/fair_queuing.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from bench.servers import engine_health_url, engine_proc
from serving.config import load_settings
from serving.config.validation import resolved_max_running
from serving.registry import Endpoint, StaticEndpoints

RESULTS = Path(__file__).resolve().parent / "results"
LIGHT_KEY, BATCH_KEY = "sk-bench-light", "sk-bench-batch"
MAX_RUNNING = 8  # small, so that 22 streams saturate the engine
ENGINE = {
    "model": {"preset": "qwen3.6-27b"},
    "engine": {"kind": "simulator"},
    "parallelism": {"tp": 8},
    "memory": {"max_running_requests": MAX_RUNNING},
    "context_length": 32768,
}
PROMPT = "Summarise the design of a serving gateway in detail. " * 40  # ~500 prompt tokens
MAX_TOKENS = 96


def tenants_file(directory: Path) -> Path:
    def d(k: str) -> str:
        return hashlib.sha256(k.encode()).hexdigest()

    f = directory / "tenants.yaml"
    f.write_text(
        "tenants:\n"
        f"  - {{name: light, weight: 1, priority: interactive, keys: ['{d(LIGHT_KEY)}']}}\n"
        f"  - {{name: batch, weight: 1, priority: batch, keys: ['{d(BATCH_KEY)}']}}\n"
    )
    return f


async def user(client: httpx.AsyncClient, key: str, until: float, ttfts: list[float], errors: list[int]) -> None:
    body = {"model": "qwen3.6-27b", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "stream": True}  # fmt: skip
    while time.monotonic() < until:
        t0 = time.monotonic()
        first: float | None = None
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {key}"}) as r:  # fmt: skip
            if r.status_code != 200:
                errors.append(r.status_code)
                await r.aread()
                await asyncio.sleep(0.5)
                continue
            async for chunk in r.aiter_bytes():
                if first is None and b'"delta":{' in chunk and (b'"content"' in chunk or b'"reasoning' in chunk):
                    first = time.monotonic() - t0
        if first is not None:
            ttfts.append(first)


async def arm(engine_url: str, *, admission: bool, batch_users: int, light_users: int, seconds: float,
              tmp: Path) -> dict[str, Any]:  # fmt: skip
    s = load_settings(overrides={**ENGINE, "gateway": {"api_keys": {"file": str(tenants_file(tmp))},
                                                       "limits": {"max_queue_wait_s": 300}}}, env={})  # fmt: skip
    capacity = float(resolved_max_running(s)) if admission else 0.0  # 0: the gateway never queues
    ep = Endpoint("engine-0", engine_url, "qwen3.6-27b", "simulator", capacity=capacity)
    from serving.gateway import create_app

    app = create_app(s, StaticEndpoints([ep]))
    light: list[float] = []
    batch: list[float] = []
    errors: list[int] = []
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=600) as c:
        await asyncio.gather(
            *(user(c, LIGHT_KEY, until, light, errors) for _ in range(light_users)),
            *(user(c, BATCH_KEY, until, batch, errors) for _ in range(batch_users)),
        )
    await app.state.gateway.shutdown()
    q = statistics.quantiles
    return {
        "light_requests": len(light),
        "light_ttft_p50_s": statistics.median(light) if light else None,
        "light_ttft_p90_s": q(light, n=10)[-1] if len(light) > 1 else None,
        "batch_requests": len(batch),
        "batch_ttft_p50_s": statistics.median(batch) if batch else None,
        "errors": errors,
    }


async def run(seconds: float, light_users: int, factor: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, url = engine_proc(ENGINE, tmp)
        proc.start()
        try:
            proc.wait_http(engine_health_url(url), 120)
            out: dict[str, Any] = {}
            common = {"light_users": light_users, "seconds": seconds, "tmp": tmp}
            out["alone"] = await arm(url, admission=True, batch_users=0, **common)
            out["fifo"] = await arm(url, admission=False, batch_users=light_users * factor, **common)
            out["fair"] = await arm(url, admission=True, batch_users=light_users * factor, **common)
        finally:
            proc.stop()
    alone = out["alone"]["light_ttft_p50_s"]
    for k in ("fifo", "fair"):
        p50 = out[k]["light_ttft_p50_s"]
        out[k]["light_ttft_p50_vs_alone"] = round(p50 / alone, 3) if p50 and alone else None
    return out


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def main(
    seconds: Annotated[float, typer.Option()] = 30.0,
    light: Annotated[int, typer.Option(help="concurrent streams of the light interactive tenant")] = 2,
    batch_factor: Annotated[int, typer.Option(help="batch tenant's streams = this × light's")] = 10,
) -> None:
    """A light interactive tenant beside a heavy batch tenant: FIFO vs fair queuing at the gateway."""
    out = asyncio.run(run(seconds, light, batch_factor))
    out["setup"] = {"engine": "simulator, timing model, qwen3.6-27b on h100 tp=8", "max_running": MAX_RUNNING,
                    "light_streams": light, "batch_streams": light * batch_factor, "seconds": seconds,
                    "prompt_chars": len(PROMPT), "max_tokens": MAX_TOKENS}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fair_queuing.json").write_text(json.dumps(out, indent=2))
    print("| arm | light TTFT p50 s | × alone | light p90 s | light reqs | batch reqs | errors |")
    print("|---|---|---|---|---|---|---|")
    for k in ("alone", "fifo", "fair"):
        r = out[k]
        ratio = r.get("light_ttft_p50_vs_alone", 1.0)
        print(
            f"| {k} | {r['light_ttft_p50_s']:.3f} | {ratio} | {r['light_ttft_p90_s']:.3f} | "
            f"{r['light_requests']} | {r['batch_requests']} | {len(r['errors'])} |"
        )


if __name__ == "__main__":
    app()
