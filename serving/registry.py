"""Where engines are: replicas publish their engine endpoint, the gateway reads the list.

A small detached Ray actor holds ``Endpoint`` records. Each engine replica publishes its record
when its engine is ready and re-publishes it (with fresh load) every autoscaling metrics interval;
it withdraws it when it drains or stops. A replica that dies without withdrawing is dropped once
its record is older than ``ttl_s`` (30 s: long enough that replicas whose re-publish calls are slowed
by a saturated machine are not dropped — a stale record costs little, because the gateway retries
once on another engine before the first byte). The gateway refreshes its copy from ``snapshot`` about once a second, in
the background — never per token, and no request waits for it while the copy holds engines: token
streams go gateway ⇄ engine over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

log = logging.getLogger("serving.registry")

REGISTRY_ACTOR = "qwen-serve-endpoints"
REGISTRY_NAMESPACE = "qwen-serve"


@dataclass(frozen=True)
class Endpoint:
    replica_id: str
    url: str  # http://host:port of the engine's rank 0
    model: str  # served model name
    engine: str  # EngineKind value
    load: float = 0.0  # running + queued requests, from the engine's /metrics
    load_at: float = 0.0  # wall time ``load`` was read (0: no time; it counts as others' requests)
    draining: bool = False
    # the field this engine puts reasoning text in (vLLM: "reasoning"); the gateway renames it to
    # "reasoning_content", so it needs no knowledge of engines beyond this record
    reasoning_field: str = "reasoning_content"
    # the engine aborts a request whose client left only while streaming it (llama.cpp): the
    # gateway streams from it even for non-streamed clients (serving/gateway/assemble.py)
    abort_needs_stream: bool = False
    capacity: float = 0.0  # requests the engine runs at once (--max-running-requests); 0 = unknown
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EndpointSource(Protocol):
    """What the gateway needs: the live engine endpoints."""

    async def endpoints(self) -> Sequence[Endpoint]: ...


class StaticEndpoints:
    """A fixed list (tests, benchmarks, a gateway in front of engines it does not own)."""

    def __init__(self, endpoints: Sequence[Endpoint]):
        self._endpoints = list(endpoints)

    async def endpoints(self) -> Sequence[Endpoint]:
        return self._endpoints


class _RegistryState:
    """The actor's state, kept a plain class so it is testable without Ray."""

    def __init__(self, ttl_s: float = 30.0):
        self.ttl_s = ttl_s
        self._records: dict[str, Endpoint] = {}

    def publish(self, record: dict[str, Any]) -> None:
        ep = Endpoint(**{**record, "updated_at": time.time()})
        self._records[ep.replica_id] = ep

    def withdraw(self, replica_id: str) -> None:
        self._records.pop(replica_id, None)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        for rid in [r for r, ep in self._records.items() if now - ep.updated_at > self.ttl_s]:
            del self._records[rid]
        return [ep.to_dict() for ep in self._records.values()]


def registry_actor(ttl_s: float = 30.0) -> Any:
    """The registry actor handle, created on first use (detached: it outlives any one replica)."""
    import ray

    cls = ray.remote(num_cpus=0, max_restarts=-1)(_RegistryState)
    # scheduling_strategy="DEFAULT": never captured into the placement group of the replica that
    # happens to create it first (it would die, and never reschedule, with that replica's group).
    return cls.options(  # type: ignore[attr-defined]
        name=REGISTRY_ACTOR,
        namespace=REGISTRY_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy="DEFAULT",
    ).remote(ttl_s)


class RegistryEndpoints:
    """EndpointSource backed by the registry actor, cached for ``refresh_s``.

    Under traffic no request waits for the actor: a copy older than ``refresh_s`` starts one
    refresh in the background (single flight) and the request is routed on the copy. A request
    waits for the snapshot only when the copy is empty (first request, engines scaled to zero) or
    older than ``max_stale_s`` (no traffic for a while: engines may have gone, or come)."""

    def __init__(self, refresh_s: float = 1.0, max_stale_s: float = 2.0):
        self.refresh_s, self.max_stale_s = refresh_s, max(max_stale_s, refresh_s)
        self._cache: list[Endpoint] = []
        self._fetched = float("-inf")  # when the copy was last refreshed
        self._actor: Any = None
        self._refresh: asyncio.Future[None] | None = None

    async def endpoints(self) -> Sequence[Endpoint]:
        age = time.monotonic() - self._fetched
        if age >= self.refresh_s and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(_log_failed_refresh)
        if (not self._cache or age >= self.max_stale_s) and self._refresh is not None and not self._refresh.done():
            await asyncio.shield(self._refresh)  # a cancelled request leaves the refresh to the others
        return self._cache

    async def _fetch(self) -> None:
        if self._actor is None:
            self._actor = registry_actor()
        records = await self._actor.snapshot.remote()
        self._cache = [Endpoint(**r) for r in records]
        self._fetched = time.monotonic()


def _log_failed_refresh(f: asyncio.Future[None]) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("engine registry refresh failed (the next request retries it): %r", f.exception())
