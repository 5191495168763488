"""The middleware ``ingress.py`` installs in Serve's HTTP servers: in a gateway replica, requests
to the generation routes go to the gateway's app ahead of Serve's layers, and the gateway then puts
the request id on those responses itself; every other request goes to Serve's app. A process where
no gateway registered (Serve's proxies, engine replicas), or whose user code runs on a loop of its
own, passes everything to Serve."""

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
SAME_LOOP = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


@pytest.fixture(autouse=True)
def no_registration(monkeypatch):
    monkeypatch.setattr(ingress._InThisProcess, "app", None)
    monkeypatch.setattr(ingress._InThisProcess, "paths", frozenset())
    monkeypatch.setenv(SAME_LOOP, "0")


def gateway_app(request_id_header: bool = False) -> Any:
    return create_app(load_settings(overrides={}, env={}), StaticEndpoints([]), request_id_header=request_id_header)


GOT: list[str] = []


async def gateway(scope, receive, send):
    GOT.append("gateway")


async def served_by(path: str) -> str:
    async def serve(scope, receive, send):
        GOT.append("serve")

    scope = {"type": "http", "path": path, "method": "POST", "headers": [(b"host", b"x")]}
    await ingress.GatewayServesGeneration(serve)(scope, None, None)
    return GOT.pop()


async def test_generation_routes_go_to_the_gateway_once_it_registered_them():
    routes = gateway_app().state.gateway.generation
    assert await served_by("/v1/chat/completions") == "serve"  # nothing registered yet
    ingress.serves_generation(gateway, routes)
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert await served_by(path) == "gateway"
    for other in ("/v1/models", "/health", "/-/healthz", "/metrics", "/x/v1/chat/completions"):
        assert await served_by(other) == "serve"


async def test_nothing_is_registered_where_user_code_runs_on_a_loop_of_its_own(monkeypatch):
    monkeypatch.delenv(SAME_LOOP)
    ingress.serves_generation(gateway, gateway_app().state.gateway.generation)
    assert await served_by("/v1/chat/completions") == "serve"


async def call(app: Any, method: str, path: str) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return sent[0]


async def test_ahead_of_serve_the_gateway_puts_the_request_id_on_generation_responses():
    app = gateway_app(request_id_header=False)  # behind Serve, whose middleware adds the id
    behind = await call(app, "GET", "/v1/chat/completions")
    ahead = await call(app.self_identified, "GET", "/v1/chat/completions")
    assert behind["status"] == ahead["status"] == 405
    assert [k for k, _ in behind["headers"]].count(b"x-request-id") == 0
    assert [k for k, _ in ahead["headers"]].count(b"x-request-id") == 1


def test_the_direct_paths_install_the_middleware_and_the_proxy_path_does_not():
    hook = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    for path in (IngressPath.DIRECT, IngressPath.HAPROXY):
        env = ingress.env_for(path)
        module, _, attr = env[hook].partition(":")
        assert (module, attr) == (ingress.__name__, ingress.ray_http_middlewares.__name__)
        assert env[SAME_LOOP] == "0"  # the gateway's app is called on the server's loop
    assert hook not in ingress.env_for(IngressPath.PROXY)
    (mw,) = ingress.ray_http_middlewares()
    assert isinstance(mw, Middleware)
    assert mw.cls is ingress.GatewayServesGeneration


def test_serves_route_lookup_names_a_generation_route_at_the_head_of_the_table():
    from ray.serve._private.thirdparty.get_asgi_route_name import get_asgi_route_name

    app = gateway_app()
    generation = list(app.state.gateway.generation)
    assert [getattr(r, "path", None) for r in app.routes[: len(generation)]] == generation
    for path, method in [*((p, "POST") for p in generation), ("/v1/models", "GET")]:
        assert get_asgi_route_name(app, {"type": "http", "path": path, "method": method, "root_path": ""}) == path
