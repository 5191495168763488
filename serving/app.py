"""Builders: validated settings → the Ray Serve application (gateway ingress + engine replicas).

``app_builder`` is the import path Ray Serve config files use (``serving.app:app_builder``, e.g.
the Helm chart's serveConfigV2): its ``args`` are ``{"settings": {...}, "config": "path.yaml",
"gateway_resources": {...}}``; the settings are the highest-precedence overrides on top of env and
the YAML file, and every Serve option is derived from them here. Settings that cannot run raise
``ConfigError`` (the application fails to deploy with that message, as ``serving config validate``
prints it). ``gateway_resources`` are custom Ray resources the gateway replicas ask for (the chart
pins them to the head pod this way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from serving.config import Settings, load_settings, settings_to_wire


def deployment_options(
    settings: Settings, *, gateway_resources: Mapping[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Every Serve option of both deployments, by deployment name: what the application runs with."""
    from serving.gateway.deployment import gateway_deployment_options
    from serving.replica.deployment import engine_deployment_options

    gateway = gateway_deployment_options(settings)
    if gateway_resources:
        actor = dict(gateway.get("ray_actor_options", {}))
        actor["resources"] = {**actor.get("resources", {}), **gateway_resources}
        gateway["ray_actor_options"] = actor
    engine = engine_deployment_options(settings)
    return {gateway["name"]: gateway, engine["name"]: engine}


def build_app(settings: Settings, *, gateway_resources: Mapping[str, float] | None = None) -> Application:
    from serving.gateway.deployment import Gateway
    from serving.replica.deployment import EngineReplica

    wire = settings_to_wire(settings)
    gateway, engine = deployment_options(settings, gateway_resources=gateway_resources).values()
    engines = EngineReplica.options(**engine).bind(wire)  # type: ignore[attr-defined]
    return Gateway.options(**gateway).bind(wire, engines)  # type: ignore[attr-defined]


def app_builder(args: dict[str, Any]) -> Application:
    settings = load_settings(args.get("config"), args.get("settings") or {})
    return build_app(settings, gateway_resources=args.get("gateway_resources"))
