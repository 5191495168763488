"""A Ray Serve driver for one benchmark arm: ``python -m bench.ray_driver '<json>'``.

Starts a fresh local Ray head (never joins another cluster on the machine), deploys the app, prints
``ready`` and serves until its stdin closes, then shuts Serve and Ray down. Apps: ``ours``
(``serving.app.build_app``: gateway ingress + engine replicas) and ``naive`` (:mod:`bench.naive_ray`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any


def build(spec: dict[str, Any]) -> Any:
    if spec["app"] == "naive":
        from bench.naive_ray import build as build_naive

        return build_naive(spec["engine_url"])
    from serving.app import build_app
    from serving.config import load_settings

    return build_app(load_settings(overrides=spec["overrides"], env={}))


def ingress_url(proxy_port: int) -> str:
    """Where clients connect: the ingress replica's own port under direct ingress, else the proxy."""
    if os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") != "1":
        return f"http://127.0.0.1:{proxy_port}"
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None, "Serve is not running"
    controller = client._controller
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for group in ray.get(controller.get_target_groups.remote(app_name="bench")):
            if str(group.protocol).upper().endswith("HTTP") and group.targets:
                t = group.targets[0]
                if t.port != proxy_port:
                    return f"http://127.0.0.1:{t.port}"
        time.sleep(0.5)
    raise TimeoutError("direct ingress: no ingress replica port after 120 s")


def monitor(period_s: float) -> None:
    """Print ``replicas t=<unix> running=<n> endpoints=<m>`` lines: engine replicas Serve reports
    RUNNING, and engines published in the registry (ready to serve)."""
    import ray
    from ray import serve

    from serving.registry import registry_actor

    reg = registry_actor()
    while True:
        try:
            app = serve.status().applications.get("bench")
            dep = app.deployments.get("EngineReplica") if app else None
            states = {str(k).rsplit(".", 1)[-1]: v for k, v in (dep.replica_states if dep else {}).items()}
            running = int(states.get("RUNNING", 0))
            eps = [e for e in ray.get(reg.snapshot.remote()) if not e.get("draining")]
            print(f"replicas t={time.time():.3f} running={running} endpoints={len(eps)}", flush=True)
        except Exception as exc:
            print(f"replicas error {type(exc).__name__}: {exc}", flush=True)
        time.sleep(period_s)


def main() -> None:
    spec = json.loads(sys.argv[1])
    import ray
    from ray import serve

    # Logical resources: the simulator's replicas reserve "GPUs" like real engines (tp × replicas).
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        num_cpus=spec.get("num_cpus", 32),
        num_gpus=spec.get("num_gpus", 0),
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": spec["port"]})
        serve.run(build(spec), name="bench", route_prefix="/", blocking=False)
        print(f"ready url={ingress_url(spec['port'])}", flush=True)
        if spec.get("monitor_s"):
            threading.Thread(target=monitor, args=(spec["monitor_s"],), daemon=True).start()
        sys.stdin.readline()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
