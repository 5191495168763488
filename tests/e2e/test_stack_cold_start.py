"""Scale to zero without failures, on real Ray: the engine deployment (``min_replicas=0``) scales
down to no replica; requests sent while its next replica starts (the simulator's slow start, 10 s)
are held by the gateway and all answered once the replica is ready — none fails.

Run: ``.venv/bin/python -m pytest -q -s tests/e2e/test_stack_cold_start.py`` (prints the figures)."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import pytest

from serving.engines.base import prom_value
from tests.e2e.stack import running_stack, stack_settings

pytestmark = pytest.mark.e2e
MODEL = "smollm2-135m"
SLOW_START_S = 10.0
REQUESTS = 6
SPACING_S = 1.0  # the 6 requests go out over the first 5 s of the 10 s start


def registered() -> int:
    import ray

    from serving.registry import registry_actor

    return len(ray.get(registry_actor().snapshot.remote()))


def stream(url: str) -> tuple[int, bool, float]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
    t0 = time.monotonic()
    with httpx.Client(timeout=120) as h, h.stream("POST", url + "/v1/chat/completions", json=body) as r:
        text = "".join(r.iter_text())
    return r.status_code, "data: [DONE]" in text, time.monotonic() - t0


def test_requests_sent_during_a_cold_start_all_succeed():
    sim = {"fixed_ttft_s": 0.05, "fixed_tpot_s": 0.02, "slow_start_s": SLOW_START_S}
    scaling = {"min_replicas": 0, "max_replicas": 1, "upscale_delay_s": 0, "downscale_delay_s": 2,
               "metrics_interval_s": 1, "look_back_period_s": 2}  # fmt: skip
    s = stack_settings(
        engine={"kind": "simulator", "simulator": sim},
        parallelism={"gpu_type": "cpu", "cpus_per_rank": 0.5},
        autoscaling=scaling,
        replica={"drain_grace_s": 1},
    )
    with running_stack(s) as url:  # the gateway's /ready woke the first replica
        deadline = time.monotonic() + 120
        while registered() and time.monotonic() < deadline:  # idle: Serve scales the engines to zero
            time.sleep(0.5)
        assert registered() == 0, "the engine deployment did not scale to zero"
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(REQUESTS) as pool:
            futures = []
            for _ in range(REQUESTS):
                futures.append(pool.submit(stream, url))
                time.sleep(SPACING_S)
            results = [f.result() for f in futures]
        served_after = time.monotonic() - t0
        metrics = httpx.get(url + "/metrics", timeout=10).text
    failed = [r for r in results if r[0] != 200 or not r[1]]
    waits = sorted(r[2] for r in results)
    queued = prom_value(metrics, "qwen_serve_queue_wait_seconds_count")
    print(f"\ncold start: {REQUESTS} requests sent over {SPACING_S * (REQUESTS - 1):.0f} s while the engine "
          f"started; {len(failed)} failed; latency {waits[0]:.1f}–{waits[-1]:.1f} s; all served "
          f"{served_after:.1f} s after the first was sent; held in the queue: {queued:.0f}")  # fmt: skip
    assert failed == []
    assert queued >= REQUESTS
