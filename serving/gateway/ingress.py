"""How clients reach the gateway replicas (Ray 2.60). The choice is made by environment variables
that Serve reads at import time, so they must be in every Ray node's environment before Ray
starts: ``serving serve`` sets them before ``ray.init``; the Helm chart puts them in the head and
worker containers (``qwen-serve.ingressEnv``, from the generated ``_generated.tpl``). See README.md
"Ingress path".

The two fast paths also run replica user code on the replica's own event loop
(``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``; Serve's default is a second thread with its own
loop, and every ASGI message of a stream crosses between the two). That is the one setting of the
``RAY_SERVE_THROUGHPUT_OPTIMIZED`` bundle on our request path; the bundle's others are left alone:
``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0`` breaks handles used outside an event loop (drivers,
tests), and log buffering, gRPC between deployments and GC freezing do not touch the token path.
Measured in README.md "Hot path".
"""

from __future__ import annotations

from serving.config.settings import IngressPath, Settings

_SAME_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}

_ENV: dict[IngressPath, dict[str, str]] = {
    IngressPath.HAPROXY: {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **_SAME_LOOP},
    IngressPath.DIRECT: {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **_SAME_LOOP},
    IngressPath.PROXY: {},
}


def env_for(path: IngressPath) -> dict[str, str]:
    return dict(_ENV[path])


def ingress_env(s: Settings) -> dict[str, str]:
    """Environment every Ray node needs for ``gateway.ingress``."""
    return env_for(s.gateway.ingress)
