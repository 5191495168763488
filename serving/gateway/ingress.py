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

They also install :class:`GatewayWatchesDisconnects` in front of each replica's direct-ingress
server (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, Serve's hook for ASGI middlewares on its
HTTP servers). On the generation routes the gateway watches the client itself
(``asgi.DisconnectGuard``); Serve would watch it a second time, with a receive-proxy task and a
request task per request. The middleware marks those requests with Serve's own opt-out header.

It also hands those requests the server's own ``send`` (scope key ``asgi.BODY_SEND``). Serve wraps
``send`` twice on the way to the replica (its request-id middleware and its direct-ingress
accounting); in Ray 2.60 both look only at ``http.response.start`` and the final body message. The
gateway's relay sends those two through Serve's wrappers and the middle of a stream (one message
per engine event) straight to the server: two coroutine layers less per event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving.config.settings import IngressPath, Settings
from serving.gateway.asgi import BODY_SEND

_SAME_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
_MIDDLEWARES = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serving.gateway.ingress:ray_http_middlewares"}

_DIRECT = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", **_SAME_LOOP, **_MIDDLEWARES}
_ENV: dict[IngressPath, dict[str, str]] = {
    IngressPath.HAPROXY: {"RAY_SERVE_ENABLE_HA_PROXY": "1", **_DIRECT},
    IngressPath.DIRECT: _DIRECT,
    IngressPath.PROXY: {},
}

# Serve's per-request opt-out of its disconnect monitoring (``x-request-disconnect-disabled: ?1``,
# read by the direct-ingress server before it calls the replica's app).
DISCONNECT_DISABLED = (b"x-request-disconnect-disabled", b"?1")


class _SelfWatched:
    """Paths whose handler watches its client itself, registered by the gateway when its app is
    built in this process (a replica of the gateway deployment). None elsewhere: Serve's proxies,
    other deployments' replicas."""

    paths: tuple[str, ...] = ()


def env_for(path: IngressPath) -> dict[str, str]:
    return dict(_ENV[path])


def ingress_env(s: Settings) -> dict[str, str]:
    """Environment every Ray node needs for ``gateway.ingress``."""
    return env_for(s.gateway.ingress)


def watches_disconnects(paths: Iterable[str]) -> None:
    """Called by the gateway deployment in its replica: these routes watch their clients themselves."""
    _SelfWatched.paths = tuple(sorted({*_SelfWatched.paths, *paths}))


class GatewayWatchesDisconnects:
    """Pure ASGI middleware in front of Serve's direct-ingress app: requests to a route registered
    with :func:`watches_disconnects` get Serve's opt-out header, so Serve awaits the gateway's
    handler directly instead of racing it against a task of its own that reads the client. A client
    that leaves still cancels the request: the gateway's ``DisconnectGuard`` reads the server's
    ``http.disconnect`` and closes the engine connection."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        paths = _SelfWatched.paths
        if paths and scope["type"] == "http" and scope["path"].endswith(paths):
            scope = {**scope, "headers": [*scope["headers"], DISCONNECT_DISABLED], BODY_SEND: send}
        await self.app(scope, receive, send)


def ray_http_middlewares() -> list[Any]:
    """Serve's HTTP callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the middlewares it puts
    around its HTTP servers, the replicas' direct-ingress servers included."""
    from starlette.middleware import Middleware

    return [Middleware(GatewayWatchesDisconnects)]
