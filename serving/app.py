"""Builders: validated settings → the Ray Serve application (gateway ingress + engine replicas).

``app_builder`` is the import path Ray Serve config files use (``serving.app:app_builder``, e.g.
the Helm chart's serveConfigV2): its ``args`` are ``{"settings": {...}, "config": "path.yaml"}``,
applied as the highest-precedence overrides on top of env and the YAML file.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import Settings, load_settings, settings_to_wire


def build_app(settings: Settings) -> Application:
    from serving.gateway.deployment import GatewayIngress, gateway_deployment_options
    from serving.replica.deployment import EngineReplica, engine_deployment_options

    wire = settings_to_wire(settings)
    engines = EngineReplica.options(**engine_deployment_options(settings)).bind(wire)  # type: ignore[attr-defined]
    return GatewayIngress.options(**gateway_deployment_options(settings)).bind(wire, engines)  # type: ignore[attr-defined]


def app_builder(args: dict[str, Any]) -> Application:
    return build_app(load_settings(args.get("config"), args.get("settings") or {}))
