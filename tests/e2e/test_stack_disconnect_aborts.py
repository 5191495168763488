"""A client that leaves frees its engine request within 1 s on the path a cluster uses: HAProxy
ingress → Ray direct ingress → gateway replica → engine replica (the simulator). The proof is the
engine's own gauge, ``sglang:num_running_reqs``, falling back to 0 — whether the client left before
the first token (streamed or not) or mid-stream.

Run: ``.venv/bin/python -m pytest -q -s tests/e2e/test_stack_disconnect_aborts.py`` (prints the
time from the client's close to the engine's gauge reading 0)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from serving.engines.base import prom_value
from tests.e2e.stack import running_stack, stack_settings

pytestmark = pytest.mark.e2e
MODEL = "smollm2-135m"
TTFT_S = 6.0  # far longer than the 1 s allowed: leaving before the first byte must not wait for it
ABORT_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def stack():
    import ray

    from serving.registry import registry_actor

    s = stack_settings(
        engine={"kind": "simulator", "simulator": {"fixed_ttft_s": TTFT_S, "fixed_tpot_s": 0.05}},
        parallelism={"gpu_type": "cpu", "cpus_per_rank": 0.5},
    )
    with running_stack(s) as url:
        deadline = time.monotonic() + 120
        engines: list = []
        while not engines and time.monotonic() < deadline:
            engines = ray.get(registry_actor().snapshot.remote())
            time.sleep(0.5)
        assert engines, "no engine registered"
        yield url, engines[0]["url"]


def running(engine_url: str) -> float:
    return prom_value(httpx.get(engine_url + "/metrics", timeout=5).text, "sglang:num_running_reqs")


def wait_for(pred, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout_s}s")


def open_request(gateway_url: str, stream: bool) -> socket.socket:
    u = urlsplit(gateway_url)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Write a long essay."}],
                       "max_tokens": 2000, "ignore_eos": True, "stream": stream}).encode()  # fmt: skip
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {u.hostname}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body)
    return sock


@pytest.mark.parametrize("moment", ["before_first_token_stream", "before_answer_non_stream", "mid_stream"])
def test_client_leaving_frees_the_engine_request_within_a_second(stack, moment):
    url, engine_url = stack
    assert running(engine_url) == 0
    sock = open_request(url, stream=moment != "before_answer_non_stream")
    wait_for(lambda: running(engine_url) >= 1, 30)
    if moment == "mid_stream":
        got = b""
        while got.count(b"data: {") < 3:
            got += sock.recv(65536)
    else:
        time.sleep(0.5)  # the request sits in the engine's prefill: no byte has come back
    sock.close()
    freed_s = wait_for(lambda: running(engine_url) == 0, 10)
    print(f"\n{moment}: engine request freed {freed_s:.2f} s after the client closed")
    assert freed_s <= ABORT_WITHIN_S


def gateway_replica():
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    (name,) = [n for n in names if n.startswith("SERVE_REPLICA") and "#gateway#" in n]
    return ray.get_actor(name, namespace="serve")


def test_serve_leaves_watching_the_client_to_the_gateway(stack):
    """The gateway watches its clients itself (``DisconnectGuard``); the middleware that
    ``ingress.py`` installs in Serve's direct-ingress server hands the generation routes to the
    gateway ahead of Serve's layers, so no receive-proxy task and no request task of Serve's run
    beside the gateway's. The aborts above happen with that in place."""
    import ray

    url, engine_url = stack
    sock = open_request(url, stream=True)
    try:
        wait_for(lambda: running(engine_url) >= 1, 30)
        counts = ray.get(gateway_replica()._get_inflight_direct_ingress_task_counts_for_testing.remote())
        assert counts == {"request_tasks": 0, "receive_tasks": 0}
    finally:
        sock.close()
    wait_for(lambda: running(engine_url) == 0, 10)
