"""The Ray Serve config (KubeRay ``serveConfigV2``) for a settings mapping.

This is the reference the chart's ``qwen-serve.serveConfig`` template must reproduce (a test
renders the chart and compares). The application is built by :data:`IMPORT_PATH` from
``args.settings`` (the values' ``settings:`` block verbatim); the ``deployments:`` entries repeat
the options the builders compute in code (``engine_deployment_options``,
``gateway_deployment_options``) so the Ray dashboard shows them and KubeRay can diff configs.
The one Kubernetes-only addition: the gateway asks for a custom resource that only the GPU-less
head pod advertises, which pins it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.config import load_settings

IMPORT_PATH = "serving.app:app_builder"
# Custom Ray resource only the head pod advertises: it pins the gateway to the GPU-less head.
GATEWAY_RESOURCE = "qwen_serve_gateway"


def _plain(value: Any) -> Any:
    """Options as plain YAML data (the Serve config file form)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def serve_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """serveConfigV2 for a values ``settings:`` mapping; raises ConfigError if the settings cannot run."""
    from serving.gateway.deployment import gateway_deployment_options
    from serving.replica.deployment import engine_deployment_options

    s = load_settings(overrides=settings, env={})
    gateway = _plain(gateway_deployment_options(s))
    gateway["ray_actor_options"] = {**gateway.get("ray_actor_options", {}), "resources": {GATEWAY_RESOURCE: 1}}
    engine = _plain(engine_deployment_options(s))
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "0.0.0.0", "port": s.gateway.port},
        "applications": [
            {
                "name": s.ray.app_name,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"settings": dict(settings)},
                "deployments": [gateway, engine],
            }
        ],
    }


def deployment_names(settings: Mapping[str, Any]) -> tuple[str, str]:
    """(gateway, engine) deployment names as the builders set them."""
    cfg = serve_config(settings)
    gateway, engine = cfg["applications"][0]["deployments"]
    return gateway["name"], engine["name"]
