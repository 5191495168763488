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
from serving.registry import StaticEndpoints

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_registration(monkeypatch):
    monkeypatch.setattr(ingress._SelfWatched, "paths", ())


async def seen_headers(path: str) -> list[tuple[bytes, bytes]]:
    got: dict[str, Any] = {}

    async def app(scope, receive, send):
        got.update(scope)

    scope = {"type": "http", "path": path, "headers": [(b"host", b"x")]}
    await ingress.GatewayWatchesDisconnects(app)(scope, None, None)
    return got["headers"]


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
