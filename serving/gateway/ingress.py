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

They also install :class:`GatewayServesGeneration` in front of each replica's direct-ingress
server (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, Serve's hook for ASGI middlewares on its
HTTP servers). In the gateway's replicas it hands the two generation routes to the gateway's app
directly, ahead of Serve's per-request layers (its request-id middleware, request metadata, a task
watching the client, queue and ongoing-request accounting, metrics, and a wrapper around every
``send``). The gateway does each of those itself for these routes: the request id, admission
(``gateway.limits.max_in_flight``), the client's disconnect (``asgi.DisconnectGuard``), metrics
and the access line. A replica that stops still finishes its streams: Serve's shutdown waits for
the direct-ingress server, and the server for its open responses. What Serve no longer sees is
these requests in its own per-deployment request metrics and ongoing-request count (the gateway
deployment has a fixed replica count, so no autoscaling reads it). Every other route, and every
request on the default-proxy path, takes Serve's usual way.

Every path, whatever its table, also slows Serve's controller to one reconcile pass every 0.5 s
(``_CONTROLLER``; Serve's default is 0.1 s): each pass polls the GCS for the cluster's nodes and
resources, and nothing here needs the faster beat. What it saves is measured in README.md
"Ingress path".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.config.settings import IngressPath, Settings

_SAME_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
_MIDDLEWARES = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serving.gateway.ingress:ray_http_middlewares"}

_CONTROLLER = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}

_DIRECT = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **_SAME_LOOP, **_MIDDLEWARES}
_ENV: dict[IngressPath, dict[str, str]] = {
    IngressPath.HAPROXY: {"RAY_SERVE_ENABLE_HA_PROXY": "1", **_DIRECT},
    IngressPath.DIRECT: _DIRECT,
    IngressPath.PROXY: {},
}


class _InThisProcess:
    """The gateway's app and its generation routes, registered by the gateway deployment when its
    replica builds the app. Unset elsewhere: Serve's proxies, other deployments' replicas."""

    app: ASGIApp | None = None
    paths: frozenset[str] = frozenset()


def env_for(path: IngressPath) -> dict[str, str]:
    return {**_ENV[path], **_CONTROLLER}


def ingress_env(s: Settings) -> dict[str, str]:
    """Environment every Ray node needs for ``gateway.ingress`` (and the controller's beat)."""
    return env_for(s.gateway.ingress)


def serves_generation(app: ASGIApp, paths: Iterable[str]) -> None:
    """Called by the gateway deployment in its replica: requests to ``paths`` go to ``app`` ahead
    of Serve's layers (``app`` puts the request id on its responses itself). Only where the replica
    runs its user code on the server's own loop (``_SAME_LOOP``, set with the middleware): the app's
    state belongs to that loop."""
    if all(os.environ.get(k) == v for k, v in _SAME_LOOP.items()):
        _InThisProcess.app, _InThisProcess.paths = app, frozenset(paths)


class GatewayServesGeneration:
    """Pure ASGI middleware in front of Serve's direct-ingress app: in a gateway replica, a request
    to a generation route goes to the gateway's app directly; anything else to Serve's."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = _InThisProcess.app
        if gateway is not None and scope["type"] == "http" and scope["path"] in _InThisProcess.paths:
            await gateway(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def ray_http_middlewares() -> list[Any]:
    """Serve's HTTP callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the middlewares it puts
    around its HTTP servers, the replicas' direct-ingress servers included."""
    from starlette.middleware import Middleware

    return [Middleware(GatewayServesGeneration)]
