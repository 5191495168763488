"""Where engines are: replicas publish their engine endpoint, the gateway reads the list.

A small detached Ray actor holds ``Endpoint`` records. Each engine replica publishes its record
when its engine is ready and re-publishes it (with fresh load) every autoscaling metrics interval;
it withdraws it when it drains or stops. A replica that dies without withdrawing is dropped once
its record is older than ``ttl_s`` (30 s: long enough that replicas whose re-publish calls are slowed
by a saturated machine are not dropped — a stale record costs little, because the gateway retries
once on another engine before the first byte). The gateway polls ``snapshot`` about once a second — never per
token: token streams go gateway ⇄ engine over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

REGISTRY_ACTOR = "qwen-serve-endpoints"
REGISTRY_NAMESPACE = "qwen-serve"


@dataclass(frozen=True)
class Endpoint:
    replica_id: str
    url: str  # http://host:port of the engine's rank 0
    model: str  # served model name
    engine: str  # EngineKind value
    load: float = 0.0  # running + queued requests, from the engine's /metrics
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
    """EndpointSource backed by the registry actor, cached for ``refresh_s``."""

    def __init__(self, refresh_s: float = 1.0):
        self.refresh_s = refresh_s
        self._cache: list[Endpoint] = []
        self._fetched = 0.0
        self._actor: Any = None

    async def endpoints(self) -> Sequence[Endpoint]:
        if time.monotonic() - self._fetched >= self.refresh_s:
            if self._actor is None:
                self._actor = registry_actor()
            records = await self._actor.snapshot.remote()
            self._cache = [Endpoint(**r) for r in records]
            self._fetched = time.monotonic()
        return self._cache
