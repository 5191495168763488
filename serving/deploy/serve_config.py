"""The Ray Serve config (KubeRay ``serveConfigV2``) for a settings mapping.

This is the reference the chart's ``qwen-serve.serveConfig`` template must reproduce: the
application is built by :data:`IMPORT_PATH` from ``args.settings`` (the values' ``settings:``
block verbatim), and the ``deployments:`` entries repeat the placement and autoscaling numbers
derived from the same settings so the Ray dashboard shows them and KubeRay can diff configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.config import GpuType, Settings, load_settings

IMPORT_PATH = "serving.app:app_builder"
GATEWAY_DEPLOYMENT = "Gateway"
ENGINE_DEPLOYMENT = "EngineReplica"
# Custom Ray resource only the head pod advertises: it pins the gateway to the GPU-less head.
GATEWAY_RESOURCE = "qwen_serve_gateway"


def engine_bundles(s: Settings) -> list[dict[str, float]]:
    """One placement bundle per node of an engine instance."""
    p = s.parallelism
    bundle: dict[str, float] = {"CPU": p.cpus_per_rank}
    if p.gpu_type != GpuType.CPU:
        bundle["GPU"] = p.gpus_per_rank
    return [dict(bundle) for _ in range(p.nodes)]


def engine_options(s: Settings) -> dict[str, Any]:
    a, r = s.autoscaling, s.replica
    autoscaling: dict[str, Any] = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_load_per_replica,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "metrics_interval_s": a.metrics_interval_s,
        "look_back_period_s": a.look_back_period_s,
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    return {
        "name": ENGINE_DEPLOYMENT,
        "autoscaling_config": autoscaling,
        "placement_group_bundles": engine_bundles(s),
        "placement_group_strategy": "STRICT_SPREAD" if s.parallelism.nodes > 1 else "STRICT_PACK",
        # Scale-down protection: a replica being removed gets this long to finish in-flight work.
        "graceful_shutdown_timeout_s": r.drain_grace_s,
        "health_check_period_s": r.health_check_period_s,
        "health_check_timeout_s": r.health_check_timeout_s,
    }


def gateway_options(s: Settings) -> dict[str, Any]:
    return {
        "name": GATEWAY_DEPLOYMENT,
        "num_replicas": s.gateway.replicas,
        "max_ongoing_requests": s.gateway.limits.max_in_flight,
        "graceful_shutdown_timeout_s": s.replica.drain_grace_s,
        "ray_actor_options": {"num_cpus": 1, "resources": {GATEWAY_RESOURCE: 1}},
    }


def serve_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """serveConfigV2 for a values ``settings:`` mapping; raises ConfigError if the settings cannot run."""
    s = load_settings(overrides=settings, env={})
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "0.0.0.0", "port": s.gateway.port},
        "applications": [
            {
                "name": s.ray.app_name,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"settings": dict(settings)},
                "deployments": [gateway_options(s), engine_options(s)],
            }
        ],
    }
