"""The middleware ``ingress.py`` installs in Serve's HTTP servers: requests to the routes the gateway
watches itself carry Serve's opt-out of its own disconnect watch; nothing else is touched, and a
process where no gateway registered (Serve's proxies, engine replicas) passes everything through."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware import Middleware

from serving.config import load_settings
from serving.config.settings import IngressPath
from serving.gateway import ingress
from serving.gateway.app import create_app
from serving.gateway.asgi import BODY_SEND
from serving.registry import StaticEndpoints

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_registration(monkeypatch):
    monkeypatch.setattr(ingress._SelfWatched, "paths", ())


async def seen_scope(path: str, send: Any = None) -> dict[str, Any]:
    got: dict[str, Any] = {}

    async def app(scope, receive, send):
        got.update(scope)

    scope = {"type": "http", "path": path, "headers": [(b"host", b"x")]}
    await ingress.GatewayWatchesDisconnects(app)(scope, None, send)
    return got


async def seen_headers(path: str) -> list[tuple[bytes, bytes]]:
    return (await seen_scope(path))["headers"]


async def test_generation_routes_opt_out_of_serves_watch_once_the_gateway_registered_them():
    app = create_app(load_settings(overrides={}, env={}), StaticEndpoints([]))
    assert ingress.DISCONNECT_DISABLED not in await seen_headers("/v1/chat/completions")  # nothing registered yet
    ingress.watches_disconnects(app.state.gateway.generation)
    assert ingress.DISCONNECT_DISABLED in await seen_headers("/v1/chat/completions")
    assert ingress.DISCONNECT_DISABLED in await seen_headers("/v1/completions")
    for other in ("/v1/models", "/health", "/-/healthz", "/metrics"):
        assert ingress.DISCONNECT_DISABLED not in await seen_headers(other)


def test_the_direct_paths_install_the_middleware_and_the_proxy_path_does_not():
    hook = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    for path in (IngressPath.DIRECT, IngressPath.HAPROXY):
        module, _, attr = ingress.env_for(path)[hook].partition(":")
        assert (module, attr) == (ingress.__name__, ingress.ray_http_middlewares.__name__)
    assert hook not in ingress.env_for(IngressPath.PROXY)
    (mw,) = ingress.ray_http_middlewares()
    assert isinstance(mw, Middleware)
    assert mw.cls is ingress.GatewayWatchesDisconnects


async def test_generation_routes_get_the_servers_own_send_for_their_stream_bodies():
    app = create_app(load_settings(overrides={}, env={}), StaticEndpoints([]))

    async def server_send(message):
        pass

    assert BODY_SEND not in await seen_scope("/v1/chat/completions", server_send)
    ingress.watches_disconnects(app.state.gateway.generation)
    assert (await seen_scope("/v1/chat/completions", server_send))[BODY_SEND] is server_send
    assert BODY_SEND not in await seen_scope("/v1/models", server_send)


def test_serves_route_lookup_names_a_generation_route_at_the_head_of_the_table():
    from ray.serve._private.thirdparty.get_asgi_route_name import get_asgi_route_name

    app = create_app(load_settings(overrides={}, env={}), StaticEndpoints([]))
    generation = list(app.state.gateway.generation)
    assert [getattr(r, "path", None) for r in app.routes[: len(generation)]] == generation
    for path, method in [*((p, "POST") for p in generation), ("/v1/models", "GET")]:
        assert get_asgi_route_name(app, {"type": "http", "path": path, "method": method, "root_path": ""}) == path
