"""Single-node simulated instances on the shared Ray cluster: GPU isolation between replicas,
autoscaling on engine load, drain on stop with no engine left behind, failed starts explained."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import psutil
import pytest
import ray
from replica_helpers import GPUS_PER_NODE, pid_gone, poll, sim_processes, sim_settings

from serving.config import settings_to_wire
from serving.registry import registry_actor

pytestmark = pytest.mark.integration


def running_replicas(app: str) -> int:
    from ray import serve

    dep = serve.status().applications[app].deployments["EngineReplica"]
    return int(dep.replica_states.get("RUNNING", 0))


def endpoints(prefix: str) -> list[dict[str, Any]]:
    return [e for e in ray.get(registry_actor().snapshot.remote()) if e["replica_id"].startswith(prefix + "/")]


def stream_chat(url: str, max_tokens: int, started: threading.Event | None = None) -> dict[str, Any]:
    """One streaming chat completion; returns the chunks' text, finish reason and whether [DONE] came."""
    body = {
        "model": "qwen3.6-27b",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": max_tokens,
        "stream": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    out: dict[str, Any] = {"chunks": 0, "finish": None, "done": False}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                out["done"] = True
                continue
            choices = json.loads(data).get("choices") or []
            if choices:
                out["chunks"] += 1
                if started is not None:
                    started.set()
                out["finish"] = choices[0].get("finish_reason") or out["finish"]
    return out


def test_two_tp2_replicas_on_one_node_get_disjoint_gpus(serve_app):
    # 4 TP=2 replicas on 2 nodes × 4 GPUs: every node holds exactly two of them.
    s = sim_settings(autoscaling={"min_replicas": 4, "max_replicas": 4})
    h = serve_app(s, "replica-gpus")
    seen: dict[int, dict[str, Any]] = {}

    def all_seen() -> bool:
        for _ in range(8):
            for r in h.ranks.remote().result(timeout_s=30):
                seen[r["pid"]] = r
        return len(seen) == 4

    poll(all_seen, timeout_s=60)
    by_node: dict[str, list[set[str]]] = defaultdict(list)
    for r in seen.values():
        env = psutil.Process(r["pid"]).environ()["CUDA_VISIBLE_DEVICES"]
        assert env == ",".join(r["gpu_ids"])  # the engine got what Ray assigned
        by_node[r["node_id"]].append(set(env.split(",")))
    assert sorted(len(v) for v in by_node.values()) == [2, 2]
    for a, b in by_node.values():
        assert len(a) == len(b) == 2
        assert not a & b  # disjoint on the same node
        assert a | b == {str(i) for i in range(GPUS_PER_NODE)}


def hold_stream(url: str, stop: threading.Event) -> None:
    """One long streaming request held open until ``stop``: the engine counts it as running the
    whole time, so the load the autoscaler sees does not depend on how fast clients reconnect."""
    body = {
        "model": "qwen3.6-27b",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 4000,  # 4000 × 50 ms: far longer than the test
        "stream": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    while not stop.is_set():
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
                for _ in r.iter_lines():
                    if stop.is_set():
                        return  # closing the connection aborts the request at the engine
        except httpx.HTTPError:
            time.sleep(0.1)


def test_scales_on_engine_load_up_and_back_down(serve_app, ray_cluster):
    # Start from a cluster with room for 3 replicas: earlier tests' replicas may still be stopping.
    poll(lambda: ray.available_resources().get("GPU", 0) >= 3 * 2, timeout_s=120)
    s = sim_settings(
        engine={"simulator": {"fixed_ttft_s": 0.05, "fixed_tpot_s": 0.05}},
        autoscaling={
            "min_replicas": 1,
            "max_replicas": 3,
            "target_load_per_replica": 2,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 3,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 1.5,
        },
    )
    app = "replica-autoscale"
    h = serve_app(s, app)
    url = h.info.remote().result(timeout_s=30)["url"]
    assert running_replicas(app) == 1

    stop = threading.Event()
    # 6 requests held open against the first engine: load 6 → ceil(6 / 2) = 3 replicas
    workers = [threading.Thread(target=hold_stream, args=(url, stop), daemon=True) for _ in range(6)]
    for w in workers:
        w.start()
    try:
        poll(lambda: running_replicas(app) == 3, timeout_s=120, interval_s=0.5)
        poll(lambda: len(endpoints(app)) == 3, timeout_s=30)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    poll(lambda: running_replicas(app) == 1, timeout_s=120, interval_s=0.5)
    poll(lambda: len(endpoints(app)) == 1, timeout_s=30)


def test_stop_drains_in_flight_requests_then_leaves_no_engine(serve_app):
    from ray import serve

    s = sim_settings(
        engine={"simulator": {"fixed_ttft_s": 0.05, "fixed_tpot_s": 0.1}},
        replica={"drain_grace_s": 20},
    )
    app = "replica-drain"
    h = serve_app(s, app)
    info = h.info.remote().result(timeout_s=30)
    pids = [r["pid"] for r in h.ranks.remote().result(timeout_s=30)]
    port = info["url"].rsplit(":", 1)[1]
    assert sim_processes(f"--port {port}")

    started = threading.Event()
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(stream_chat(info["url"], 40, started)), daemon=True)
    t.start()
    assert started.wait(30)
    t0 = time.monotonic()
    serve.delete(app)  # Serve stops the replica: draining → drain → SIGTERM/SIGKILL
    t.join(timeout=60)
    assert result["done"], result
    assert result["finish"] == "length"
    assert result["chunks"] >= 40
    assert time.monotonic() - t0 < 20 + 15  # inside the grace period (+ kill grace and slack)
    for pid in pids:
        poll(lambda pid=pid: pid_gone(pid), timeout_s=30)
    assert sim_processes(f"--port {port}") == []
    assert endpoints(app) == []


def test_a_failed_start_raises_with_the_engines_last_lines(ray_cluster):
    from serving.replica.process import EngineStartError

    s = sim_settings(engine={"extra_args": ["--sim-no-such-knob"]})

    @ray.remote(num_cpus=0.1, num_gpus=2)
    def start(wire: dict[str, Any]) -> str:
        from serving.config import settings_from_wire
        from serving.replica.instance import EngineInstance

        inst = EngineInstance(settings_from_wire(wire), "failing")
        try:
            asyncio.run(inst.start())
        except EngineStartError as e:
            return f"EngineStartError: {e}"
        return "started"

    msg = ray.get(start.remote(settings_to_wire(s)), timeout=120)
    assert msg.startswith("EngineStartError")
    assert "--sim-no-such-knob" in msg  # argparse's complaint, from the engine's own output
    assert "exited with code" in msg
