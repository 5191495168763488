"""How each benchmark process is launched: the simulator engine, our gateway on plain uvicorn,
sglang-router, and Ray Serve drivers (our app, the naive handle-streaming app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.procs import PY, Proc, RoleRule, free_port
from serving.config import Settings, load_settings
from serving.engines import get_engine, plan_instance
from serving.local import local_node_env

ENGINE_NEEDLE = "serving.engines.simulator"
# A Ray replica that launches the simulator: its engine subtree is charged to "engine", not Ray.
# Our gateway's Serve replica is charged to "gateway" (comparable with the plain-uvicorn arm); the
# rest of Ray (proxy, controller, GCS, raylet, engine replica actors) to "ray".
ENGINE_RULES = [RoleRule(ENGINE_NEEDLE, "engine"), RoleRule("ServeReplica:bench:gateway", "gateway")]


def sim_overrides(*, zero_delay: bool = True, **sim: Any) -> dict[str, Any]:
    """Settings overrides of the benchmarked deployment: Qwen3.6-27B on 8 simulated GPUs."""
    return {
        "model": {"preset": "qwen3.6-27b"},
        "engine": {"kind": "simulator", "simulator": {"zero_delay": zero_delay, **sim}},
        "parallelism": {"tp": 8},
    }


def bench_settings(overrides: dict[str, Any]) -> Settings:
    return load_settings(overrides=overrides, env={})


def engine_proc(overrides: dict[str, Any], log_dir: Path, name: str = "engine") -> tuple[Proc, str]:
    """The simulator started from its launch plan (the exact argv a replica would run)."""
    s = bench_settings(overrides)
    port = free_port()
    rank0 = plan_instance(s, host="127.0.0.1", port=port).ranks[0]
    return Proc(name, "engine", rank0.argv, log_dir / f"{name}.log", env=rank0.env), f"http://127.0.0.1:{port}"


def engine_health_url(url: str) -> str:
    return url + get_engine("simulator").health_path


def gateway_proc(overrides: dict[str, Any], engine_urls: list[str], log_dir: Path) -> tuple[Proc, str]:
    """Our gateway app (``serving.gateway.create_app``) on plain uvicorn over a static endpoint list."""
    port = free_port()
    spec = json.dumps({"overrides": overrides, "engines": engine_urls, "port": port})
    return Proc("gateway", "gateway", [PY, "-m", "bench.gateway_server", spec], log_dir / "gateway.log"), (
        f"http://127.0.0.1:{port}"
    )


def router_proc(engine_urls: list[str], log_dir: Path) -> tuple[Proc, str]:
    """SGLang's Rust router (sglang-router) in front of the same engines."""
    port = free_port()
    argv = [PY, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--worker-urls", *engine_urls, "--policy", "round_robin", "--log-level", "warn"]
    argv += ["--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1"]
    return Proc("router", "router", argv, log_dir / "router.log"), f"http://127.0.0.1:{port}"


def ours_overrides(overrides: dict[str, Any], port: int) -> dict[str, Any]:
    """Our app on one small machine: the gateway where the settings say, 1 logical CPU per rank."""
    par = {**overrides.get("parallelism", {}), "cpus_per_rank": 1.0}
    # direct ingress: the path our gateway is built for (HAProxy adds its fixed stats ports)
    gw = {"ingress": "direct", **overrides.get("gateway", {}), "host": "127.0.0.1", "port": port}
    tel = {"log_json": False, "log_level": "WARNING", **overrides.get("telemetry", {})}
    rep = {"drain_grace_s": 2.0, **overrides.get("replica", {})}
    eng = {**overrides.get("engine", {}), "port": 0}  # a free port per replica, never SGLang's 30000
    return {**overrides, "engine": eng, "parallelism": par, "gateway": gw, "telemetry": tel, "replica": rep}


def ray_proc(
    app: str, overrides: dict[str, Any], log_dir: Path, engine_url: str | None = None, monitor_s: float | None = None
) -> tuple[Proc, str]:
    """A Ray Serve driver (local Ray head as its children) serving ``app`` (ours | naive)."""
    port = free_port()
    env: dict[str, str] = {}
    gpus = 0
    if app == "ours":
        overrides = ours_overrides(overrides, port)
        s = bench_settings(overrides)
        gpus = s.parallelism.gpus_per_instance * s.autoscaling.max_replicas
        env.update(local_node_env(s, {}))  # exactly what `serving serve` gives its Ray nodes
    spec = json.dumps(
        {
            "app": app,
            "overrides": overrides,
            "engine_url": engine_url,
            "port": port,
            "num_gpus": gpus,
            "monitor_s": monitor_s,
        }
    )
    argv = [PY, "-m", "bench.ray_driver", spec]
    return Proc(f"ray-{app}", "ray", argv, log_dir / f"ray-{app}.log", env=env, stdin_shutdown=True), (
        f"http://127.0.0.1:{port}"
    )
