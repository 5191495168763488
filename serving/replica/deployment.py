"""The engine replica: a thin Ray Serve deployment around :class:`EngineInstance`.

One replica = one engine instance = one placement group. Serve calls ``check_health`` every
``health_check_period_s`` and ``record_autoscaling_stats`` every metrics interval; on stop it runs
the graceful shutdown and then ``__del__`` (Serve's only stop hook), which delegates to
``shutdown()``: mark the endpoint draining, drain in-flight engine requests for
``replica.drain_grace_s``, withdraw the endpoint, SIGTERM/SIGKILL every rank.

The gateway never calls this per token: it reads endpoints from the registry and talks HTTP to
the engine. ``info()`` is cheap; a handle call to it also wakes a deployment scaled to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ray import serve

from serving.config import Settings, resolved_max_running, settings_from_wire
from serving.observability.logging import configure_logging
from serving.registry import Endpoint, registry_actor
from serving.replica.autoscaling import ENGINE_LOAD_METRIC, POLICY_PATH
from serving.replica.instance import KILL_GRACE_S, EngineInstance
from serving.replica.placement import placement

logger = logging.getLogger("qwen_serve.replica")

REGISTRY_TIMEOUT_S = 5.0
# Serve waits this long beyond the drain: SIGTERM→SIGKILL of the ranks + slack, or it force-kills us mid-drain.
SHUTDOWN_BEYOND_DRAIN_S = KILL_GRACE_S + 10.0


def engine_deployment_options(s: Settings) -> dict[str, Any]:
    """``EngineReplica.options(**...)`` for these settings: resources, health, drain, autoscaling."""
    pl = placement(s)
    a, r = s.autoscaling, s.replica
    autoscaling: dict[str, Any] = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_load_per_replica,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "metrics_interval_s": a.metrics_interval_s,
        "look_back_period_s": a.look_back_period_s,
        "policy": {"policy_function": POLICY_PATH},
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    return {
        "name": "EngineReplica",
        "placement_group_bundles": pl.bundles,
        "placement_group_strategy": pl.strategy,
        "ray_actor_options": pl.actor_resources(),
        "autoscaling_config": autoscaling,
        "health_check_period_s": r.health_check_period_s,
        "health_check_timeout_s": r.health_check_timeout_s,
        "graceful_shutdown_timeout_s": r.drain_grace_s + SHUTDOWN_BEYOND_DRAIN_S,
        "graceful_shutdown_wait_loop_s": 0.5,
        # control calls only (info, ranks, wake-ups); tokens never cross handles
        "max_ongoing_requests": 64,
    }


@serve.deployment
class EngineReplica:
    # Ray actors (and Serve replicas) accept an async constructor.
    async def __init__(self, settings_wire: dict[str, Any]):  # type: ignore[misc]
        self.settings = settings_from_wire(settings_wire)
        t = self.settings.telemetry
        configure_logging(t.log_level, json_logs=t.log_json)  # engine lines become JSON records
        ctx = serve.get_replica_context()
        self.replica_id = f"{ctx.app_name}/{ctx.deployment}#{ctx.replica_tag}"
        self.instance = EngineInstance(self.settings, self.replica_id)
        self._load = 0.0
        self._load_at = 0.0
        self._draining = False
        self._healthy = True
        self._stopped = False
        self._refresher: asyncio.Task[None] | None = None
        await self.instance.start()  # on failure it has already stopped every rank
        self._registry = registry_actor()
        await self._publish()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    # read-only -----------------------------------------------------------------------------------
    def endpoint(self) -> Endpoint:
        return Endpoint(
            replica_id=self.replica_id,
            url=self.instance.url,
            model=str(self.settings.model.served_name),
            engine=self.settings.engine.kind.value,
            reasoning_field=self.instance.engine.reasoning_field,
            abort_needs_stream=self.instance.engine.abort_needs_stream,
            capacity=float(resolved_max_running(self.settings)),
            load=self._load,
            load_at=self._load_at,
            draining=self._draining,
        )

    def info(self) -> dict[str, Any]:
        return self.endpoint().to_dict()

    def ranks(self) -> list[dict[str, Any]]:
        """Where each rank runs: node id/ip, GPU ids, pid, the env we set (tests, debugging)."""
        return [r.to_dict() for r in self.instance.ranks]

    # Serve hooks ---------------------------------------------------------------------------------
    async def check_health(self) -> None:
        try:
            await self.instance.check_health()
        except Exception as e:
            logger.warning("engine unhealthy: %s", e, extra={"replica_id": self.replica_id})
            self._healthy = False
            await self._withdraw()
            raise
        if not self._healthy:
            self._healthy = True
            await self._publish()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        await self._refresh_load()
        return {ENGINE_LOAD_METRIC: self._load}

    async def __del__(self) -> None:
        # Serve's graceful-stop hook is __del__; all the work is in the explicit shutdown().
        await self.shutdown()

    # lifecycle -----------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        if self._stopped or not hasattr(self, "_refresher"):
            return  # already stopped, or the constructor failed (and cleaned up) before this
        self._stopped = True
        self._draining = True
        if self._refresher is not None:
            self._refresher.cancel()
        await self._publish()  # the gateway stops picking this engine
        left = await self.instance.drain(self.settings.replica.drain_grace_s)
        if left:
            logger.warning("drain grace over with %s request(s) in flight", left, extra={"replica_id": self.replica_id})
        await self._withdraw()
        await self.instance.shutdown()

    async def _refresh_load(self) -> None:
        try:
            self._load = await self.instance.load()
            self._load_at = time.time()  # the gateway subtracts its own requests at this moment
        except Exception as e:  # a failing engine is check_health's business
            logger.debug("load read failed: %r", e, extra={"replica_id": self.replica_id})

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autoscaling.metrics_interval_s)
            await self._refresh_load()
            if self._healthy:
                await self._publish()

    async def _publish(self) -> None:
        try:
            await asyncio.wait_for(self._registry.publish.remote(self.endpoint().to_dict()), REGISTRY_TIMEOUT_S)
        except Exception as e:  # the registry restarting must not stall the replica; next refresh retries
            logger.warning("registry publish failed: %r", e, extra={"replica_id": self.replica_id})

    async def _withdraw(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._registry.withdraw.remote(self.replica_id), REGISTRY_TIMEOUT_S)
