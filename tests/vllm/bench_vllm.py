"""Tokens/s of vLLM's CPU build on the tiny model, direct vs through the stack (not a test).

    .venv/bin/python -m tests.vllm.bench_vllm [--tokens 256] [--repeats 2]

Starts the same stack as the test lane (one replica), then for 1 and 4 concurrent streams of
``--tokens`` tokens each (ignore_eos, greedy) measures completion tokens / wall time, first
straight to the engine's URL, then through HAProxy → gateway → engine."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import ray

from serving.registry import registry_actor
from tests.e2e.stack import running_stack
from tests.vllm.conftest import SERVED, vllm_settings


def one_stream(url: str, tokens: int) -> int:
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "Count"}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    done = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                done = json.loads(line[6:])["usage"]["completion_tokens"]
    return done


def rate(url: str, streams: int, tokens: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        total = sum(pool.map(lambda _: one_stream(url, tokens), range(streams)))
    return total / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    with running_stack(vllm_settings()) as url:
        ready = time.perf_counter() - t0
        engine = next(e["url"] for e in ray.get(registry_actor().snapshot.remote()) if e["model"] == SERVED)
        one_stream(engine, 16)  # warm-up
        rows = []
        for streams in (1, 4):
            for arm, target in (("direct", engine), ("stack", url)):
                runs = [rate(target, streams, a.tokens) for _ in range(a.repeats)]
                rows.append((streams, arm, statistics.median(runs), runs))
    print(f"stack ready (Ray + gateway + vLLM replica healthy) in {ready:.1f} s")
    print("| streams | arm | tokens/s (median) | runs |")
    print("|---|---|---|---|")
    for streams, arm, med, runs in rows:
        print(f"| {streams} | {arm} | {med:.1f} | {', '.join(f'{r:.1f}' for r in runs)} |")


if __name__ == "__main__":
    main()
