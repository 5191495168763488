"""The Ray Serve config (KubeRay ``serveConfigV2``) for a settings mapping.

The chart's ``qwen-serve.serveConfig`` template must reproduce it (a test renders the chart and
compares). It is thin on purpose: the values' ``settings:`` block goes verbatim to
:data:`IMPORT_PATH`, which validates it and derives every Serve option in code
(``engine_deployment_options``, ``gateway_deployment_options``) at deploy time; settings that
cannot run fail the application with the same message as ``serving config validate``. The one
Kubernetes-only addition: the gateway asks for a custom resource that only the GPU-less head pod
advertises (``gateway_resources``), which pins it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.config import load_settings

IMPORT_PATH = "serving.app:app_builder"
# Custom Ray resource only the head pod advertises: it pins the gateway to the GPU-less head.
GATEWAY_RESOURCE = "qwen_serve_gateway"
# Each gateway replica asks for one unit; the head advertises far more, so the resource pins the
# gateway without limiting how many replicas (or surge replicas during an update) it holds.
GATEWAY_RESOURCE_ASK = 1
GATEWAY_RESOURCE_CAPACITY = 1000


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
                "args": {"settings": dict(settings), "gateway_resources": {GATEWAY_RESOURCE: GATEWAY_RESOURCE_ASK}},
            }
        ],
    }


def expanded_serve_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`serve_config` plus the ``deployments:`` the builder derives at deploy time (for people
    and diffs: ``serving deploy serve-config --expand``)."""
    from serving.app import deployment_options

    cfg = serve_config(settings)
    app = cfg["applications"][0]
    s = load_settings(overrides=settings, env={})
    opts = deployment_options(s, gateway_resources=app["args"]["gateway_resources"])
    app["deployments"] = [_plain(o) for o in opts.values()]
    return cfg


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
