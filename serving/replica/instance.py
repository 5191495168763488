"""One engine instance: rank 0 as a child process of the replica, ranks ≥ 1 as Ray actors.

Explicit lifecycle, no Ray Serve in here (the deployment is a thin shell around this class):
``start()`` (with the start-up timeout and a readiness wait), ``check_health()``, ``load()``,
``drain()``, ``shutdown()``. Must run inside a Ray worker (the replica actor); multi-node
instances also need the placement group Serve reserved for the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import httpx

from serving.config.settings import Settings
from serving.engines import get_engine, plan_instance
from serving.engines.base import LaunchPlan
from serving.replica.placement import Placement, cuda_visible_devices, placement
from serving.replica.process import EngineProcess, EngineStartError
from serving.replica.rank import RankInfo, rank_worker_cls, where_am_i

logger = logging.getLogger("qwen_serve.replica")

KILL_GRACE_S = 10.0  # SIGTERM → SIGKILL, per rank, after the drain
DRAIN_MIN_S = 1.5  # the gateway refreshes the registry about once a second: let it see "draining"


# Brackets the failure summary inside Serve's status message, so `serving serve` can cut it out.
FAILURE_MARK = "---- qwen-serve engine failure ----"


class EngineUnhealthy(RuntimeError):
    """The instance cannot serve: a rank died or rank 0's health endpoint failed."""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EngineInstance:
    def __init__(self, settings: Settings, replica_id: str):
        self.settings = settings
        self.replica_id = replica_id
        self.engine = get_engine(settings.engine.kind)
        self.placement: Placement = placement(settings)
        self.plan: LaunchPlan | None = None
        self.host = ""
        self.port = 0
        self.dist_init_addr: str | None = None
        self.ranks: list[RankInfo] = []
        self._rank0: EngineProcess | None = None
        self._workers: list[Any] = []  # Ray actor handles, rank i at index i - 1
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        self._stopped = False
        self._last_generated = float("-inf")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # start ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        timeout = self.settings.replica.startup_timeout_s
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._launch(), timeout)
            await self._wait_ready(deadline)
        except BaseException as e:
            timed_out = isinstance(e, asyncio.TimeoutError | TimeoutError)
            rank0_died = self._rank0 is not None and not self._rank0.alive()
            if isinstance(e, EngineUnhealthy) and not rank0_died:
                reason = str(e)  # a rank ≥ 1 died: its own report
            else:
                reason = self._exit_reasons_now(timeout, timed_out)
            await self.shutdown(kill_grace_s=2.0)
            if timed_out or isinstance(e, EngineUnhealthy):
                raise EngineStartError(f"{FAILURE_MARK}\n{reason}\n{FAILURE_MARK}") from e
            raise

    async def _launch(self) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        node_id, node_ip, gpus = where_am_i()
        self.host = node_ip
        self.port = self.settings.engine.port or free_port(node_ip)
        n = self.placement.nodes
        self.dist_init_addr = f"{node_ip}:{free_port(node_ip)}" if n > 1 else None
        plan = plan_instance(self.settings, host=node_ip, port=self.port, dist_init_addr=self.dist_init_addr)
        self.plan = plan

        if n > 1:
            pg = ray.util.get_current_placement_group()
            if pg is None:
                raise EngineStartError(
                    "a multi-node instance needs the replica's placement group: deploy EngineReplica with "
                    "engine_deployment_options(settings)"
                )
            cls = rank_worker_cls()
            for i in range(1, n):
                strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
                self._workers.append(
                    cls.options(scheduling_strategy=strategy, **self.placement.actor_resources()).remote(
                        i,
                        self.replica_id,
                        self.settings.telemetry.log_level,
                        self.settings.telemetry.log_json,
                        self.engine.kind.value,
                    )
                )
        # Ranks ≥ 1 first: they wait for rank 0 at --dist-init-addr, as SGLang's do.
        started = await asyncio.gather(
            *[w.start.remote(plan.ranks[i].argv, plan.ranks[i].env) for i, w in enumerate(self._workers, 1)]
        )
        env0 = {**plan.ranks[0].env, **cuda_visible_devices(gpus)}
        self._rank0 = EngineProcess(
            plan.ranks[0].argv, env0, rank=0, replica_id=self.replica_id, engine=self.engine.kind.value
        )
        pid = self._rank0.start()
        self.ranks = [RankInfo(0, node_id, node_ip, gpus, pid, env0)] + [RankInfo(**r) for r in started]
        logger.info(
            "engine instance launching: %s on %d node(s), rank 0 at %s, dist-init %s",
            self.engine.kind.value,
            n,
            self.url,
            self.dist_init_addr,
            extra={"replica_id": self.replica_id},
        )

    async def _wait_ready(self, deadline: float) -> None:
        delay = 0.1
        while True:
            await self._ranks_alive()
            with contextlib.suppress(httpx.HTTPError):
                r = await self._client.get(self.url + self.engine.health_path, timeout=5.0)
                if r.status_code == 200:
                    logger.info("engine ready at %s", self.url, extra={"replica_id": self.replica_id})
                    return
            if time.monotonic() + delay > deadline:
                raise TimeoutError
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # health & load -------------------------------------------------------------------------------
    async def _ranks_alive(self, timeout_s: float = 10.0) -> None:
        import ray

        if self._rank0 is None or not self._rank0.alive():
            if self._rank0 is None:
                raise EngineUnhealthy(f"engine {self.engine.kind.value} rank 0 was never started")
            raise EngineUnhealthy(self._rank0.failure("exited").render())
        for i, w in enumerate(self._workers, 1):
            try:
                ok = await asyncio.wait_for(w.alive.remote(), timeout_s)
            except (TimeoutError, ray.exceptions.RayActorError) as e:
                raise EngineUnhealthy(f"engine rank {i}: its actor is gone ({type(e).__name__})") from e
            if not ok:
                raise EngineUnhealthy(await w.exit_report.remote())

    async def check_health(self) -> None:
        """Every rank alive, rank 0's health endpoint answering 200, and the engine able to generate:
        SGLang's /health generates one token itself; for the others (whose /health answers while a
        stuck scheduler serves nothing) one token is generated here, at most every
        ``replica.health_generate_interval_s``."""
        timeout = max(0.5, self.settings.replica.health_check_timeout_s * 0.8)
        await self._ranks_alive(timeout)
        try:
            r = await self._client.get(self.url + self.engine.health_path, timeout=timeout)
        except httpx.HTTPError as e:
            raise EngineUnhealthy(f"{self.engine.health_path}: {type(e).__name__} {e}") from e
        if r.status_code != 200:
            raise EngineUnhealthy(f"{self.engine.health_path} answered {r.status_code}: {r.text[:200]}")
        interval = self.settings.replica.health_generate_interval_s
        if not self.engine.health_generates and time.monotonic() - self._last_generated >= interval:
            await self._generate_one_token(timeout)
            self._last_generated = time.monotonic()

    async def _generate_one_token(self, limit_s: float) -> None:
        body = {"model": self.settings.model.served_name, "prompt": "ok", "max_tokens": 1, "temperature": 0}
        key = self.settings.engine.api_key
        headers = {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        try:
            r = await self._client.post(self.url + "/v1/completions", json=body, headers=headers, timeout=limit_s)
        except httpx.HTTPError as e:
            raise EngineUnhealthy(
                f"{self.engine.health_path} answers, but a 1-token generation failed ({type(e).__name__} "
                f"within {limit_s:g} s): the engine's scheduler is stuck"
            ) from e
        if r.status_code != 200:
            raise EngineUnhealthy(f"a 1-token generation answered {r.status_code}: {r.text[:200]}")

    async def load(self) -> float:
        """Running + queued requests, from the engine's Prometheus metrics."""
        r = await self._client.get(self.url + self.engine.metrics_path, timeout=5.0)
        r.raise_for_status()
        return self.engine.parse_load(r.text).total

    # stop ----------------------------------------------------------------------------------------
    async def drain(self, grace_s: float) -> float:
        """Wait until the engine has no running or queued request, at most ``grace_s``.
        Returns the load left (0 when drained)."""
        start = time.monotonic()
        deadline = start + grace_s
        left = float("nan")
        while True:
            try:
                left = await self.load()
            except httpx.HTTPError:
                return float("nan")  # the engine is gone: nothing left to drain
            now = time.monotonic()
            if left == 0 and now - start >= min(DRAIN_MIN_S, grace_s):
                return 0.0
            if now >= deadline:
                return left
            await asyncio.sleep(min(0.25, max(0.0, deadline - now)))

    async def shutdown(self, kill_grace_s: float = KILL_GRACE_S) -> None:
        """SIGTERM then SIGKILL every rank (process groups), kill the rank actors. Idempotent."""
        import ray

        if self._stopped:
            return
        self._stopped = True
        stops: list[Any] = [w.stop.remote(kill_grace_s) for w in self._workers]
        if self._rank0 is not None:
            stops.append(asyncio.to_thread(self._rank0.stop, kill_grace_s))
        results = await asyncio.gather(*stops, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, ray.exceptions.RayActorError):
                logger.warning("stopping a rank failed: %r", res, extra={"replica_id": self.replica_id})
        for w in self._workers:
            with contextlib.suppress(Exception):
                ray.kill(w, no_restart=True)
        await self._client.aclose()
        logger.info("engine instance stopped", extra={"replica_id": self.replica_id})

    def _exit_reasons_now(self, timeout_s: float, timed_out: bool) -> str:
        if self._rank0 is None:
            return f"engine {self.engine.kind.value} rank 0 was never started"
        if not self._rank0.alive():
            return self._rank0.failure("exited during start-up").render()
        what = f"was not ready within {timeout_s:g}s (replica.startup_timeout_s)" if timed_out else "failed"
        return self._rank0.failure(what).render()
