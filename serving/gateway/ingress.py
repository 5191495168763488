"""How clients reach the gateway replicas (Ray 2.60). The choice is made by environment variables
that Serve reads at import time, so they must be in every Ray node's environment before Ray
starts: ``serving serve`` sets them before ``ray.init``; the Helm chart puts them in the head and
worker containers. See README.md "Ingress path"."""

from __future__ import annotations

from serving.config.settings import IngressPath, Settings

_ENV: dict[IngressPath, dict[str, str]] = {
    IngressPath.HAPROXY: {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    IngressPath.DIRECT: {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    IngressPath.PROXY: {},
}


def ingress_env(s: Settings) -> dict[str, str]:
    """Environment every Ray node needs for ``gateway.ingress``."""
    return dict(_ENV[s.gateway.ingress])
