"""The gateway as Ray Serve's ingress: a thin class around :func:`serving.gateway.create_app`.

The app is built on the replica (``__serve_build_asgi_app__``, called by ``@serve.ingress()``
after ``__init__``) from the settings handed over in wire form, with ``RegistryEndpoints`` as
its endpoint source. Tokens never cross a Ray handle: the app talks HTTP to the engines. The
engine deployment's handle is accepted only so that the engines belong to the same application
graph (deployed, scaled and torn down with it); it is never called per request.

How clients skip the default proxy hop (Ray 2.60, see README.md "Ingress path"): set
``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` (or ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, which turns it on)
or ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the environment of every Ray node before Ray starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ray import serve

from serving.config import Settings, settings_from_wire
from serving.gateway.app import create_app
from serving.gateway.ingress import serves_generation
from serving.observability.logging import configure_logging
from serving.registry import Endpoint, EndpointSource, RegistryEndpoints

log = logging.getLogger("qwen_serve.gateway")


def gateway_deployment_options(settings: Settings) -> dict[str, Any]:
    """Ray Serve options of the gateway deployment (user overrides are merged by the builder)."""
    g = settings.gateway
    return {
        "name": "gateway",
        "num_replicas": g.replicas,
        # The gateway admits up to max_in_flight itself (503 + Retry-After beyond); let Serve's
        # own queue cap sit just above it so the gateway, not the proxy, answers overload.
        "max_ongoing_requests": g.limits.max_in_flight + 16,
        "ray_actor_options": {"num_cpus": 0.5},
        "health_check_period_s": 10.0,
        "graceful_shutdown_timeout_s": settings.replica.drain_grace_s,
        # The gateway writes its own access line per request (tenant, tokens, engine, TTFT);
        # Serve's would be a second one, formatted and written on the request path.
        "logging_config": {"enable_access_log": False, "log_level": settings.telemetry.log_level},
    }


class WakeOnEmpty:
    """Endpoints that wake a deployment scaled to zero: when no engine is registered, one cheap
    handle call (``info``) makes Serve start a replica (its cold-start path). The gateway holds
    requests meanwhile (``autoscaling.cold_start_wait_s``, ``wakes_from_zero``). At most one
    wake-up per ``every_s``."""

    wakes_from_zero = True

    def __init__(self, inner: EndpointSource, engines: Any, every_s: float = 5.0) -> None:
        self.inner, self.engines, self.every_s = inner, engines, every_s
        self._last = float("-inf")

    async def endpoints(self) -> Sequence[Endpoint]:
        found = await self.inner.endpoints()
        if not found and self.engines is not None and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            log.info("no engine registered: asking Serve to start one")
            self.engines.info.remote()  # fire and forget: the response is not needed
        return found


@serve.deployment
@serve.ingress()
class GatewayIngress:
    """The Serve deployment (named ``gateway``); the ASGI app it serves is :class:`serving.gateway.app.Gateway`'s."""

    def __init__(self, wire_settings: dict[str, Any], engines: Any = None) -> None:
        self.settings = settings_from_wire(wire_settings)
        self.engines = engines  # keeps the engine deployment in this application; never called per token
        t = self.settings.telemetry
        configure_logging(t.log_level, json_logs=t.log_json)

    def __serve_build_asgi_app__(self) -> Any:
        # Serve's own RequestIdMiddleware (proxy and direct ingress) puts the id on the request, and
        # appends it to every response: ours would send the header twice.
        app = create_app(self.settings, WakeOnEmpty(RegistryEndpoints(), self.engines), request_id_header=False,
                         shared_limits=True)  # fmt: skip
        # The generation routes are served ahead of Serve's per-request layers (ingress.py)
        serves_generation(app.self_identified, app.state.gateway.generation)
        return app
