"""Admission: while the engines serving a model are saturated, requests wait here, per model, and
are let through in weighted fair order across tenants, interactive before batch.

Saturation comes from engine load, not from a fixed in-flight count: an endpoint's load is the
router's (this gateway's outstanding requests plus others' share of the engine's running + queued
count from the registry, see ``routing``), its capacity is the ``capacity`` the replica publishes (the engine's
``--max-running-requests``). Interactive requests may fill an engine to its capacity; batch
requests only to ``gateway.limits.batch_max_load_ratio`` × capacity, so a burst of batch work
leaves room for interactive tenants. An endpoint that publishes no capacity is never saturated.

Order: start-time weighted fair queuing. Each tenant's requests get virtual finish tags
``max(V, tenant's last tag) + 1 / weight``; the queue serves interactive before batch, and by tag
within a class. Bounds: ``gateway.limits.max_queued`` requests per model (past it 429
``queue_full``) and ``gateway.limits.max_queue_wait_s`` (past it 503 ``queue_timeout``), both with
Retry-After. A client that leaves while queued is simply dropped from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from serving.config.settings import LimitSettings
from serving.gateway.auth import Priority, Tenant
from serving.gateway.errors import ApiError
from serving.gateway.routing import Router
from serving.observability.metrics import GatewayMetrics
from serving.registry import Endpoint

POLL_S = 0.05  # a queued model re-reads engine load this often (and on every completion)
_RANK = {Priority.INTERACTIVE: 0, Priority.BATCH: 1}


@dataclass(order=True)
class _Waiter:
    rank: int
    tag: float
    seq: int
    priority: Priority = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


def _let_through(w: _Waiter) -> bool:
    return w.future.done() and not w.future.cancelled()


class _ModelQueue:
    def __init__(self) -> None:
        self.heap: list[_Waiter] = []
        self.vtime = 0.0
        self.last_tag: dict[str, float] = {}
        self.reserved = 0  # let through, not yet dispatched
        self.endpoints: Sequence[Endpoint] = ()  # as last read by the pump
        self.wake = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None

    def waiting(self) -> int:
        return sum(1 for w in self.heap if not w.future.done())


Candidates = Callable[[str], Awaitable[Sequence[Endpoint]]]


class Admission:
    def __init__(self, limits: LimitSettings, router: Router, metrics: GatewayMetrics, candidates: Candidates) -> None:
        self.limits = limits
        self.router = router
        self.metrics = metrics
        self.candidates = candidates
        self._queues: dict[str, _ModelQueue] = {}
        self._seq = itertools.count()

    # ---- capacity ---------------------------------------------------------------------------
    def free(self, endpoints: Sequence[Endpoint], priority: Priority) -> float:
        """Requests of ``priority`` the engines can take now (inf when one publishes no capacity)."""
        ratio = 1.0 if priority is Priority.INTERACTIVE else self.limits.batch_max_load_ratio
        total = 0.0
        for ep in endpoints:
            if ep.capacity <= 0:
                return math.inf
            total += max(0.0, max(1.0, math.floor(ep.capacity * ratio)) - self.router.load(ep))
        return total

    def poke(self) -> None:
        """Capacity may have come free (a request ended)."""
        for q in self._queues.values():
            if q.heap:
                q.wake.set()

    # ---- the queue ---------------------------------------------------------------------------
    async def admit(self, model: str, tenant: Tenant, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        """Return, with the endpoints to choose from, when a request of ``tenant`` may be
        dispatched to ``model``'s engines. The caller dispatches at once (no await in between), so
        the reservation ends here."""
        q = self._queues.get(model)
        if (q is None or not q.waiting()) and self.free(endpoints, tenant.priority) > (q.reserved if q else 0):
            return endpoints
        if q is None:
            q = self._queues[model] = _ModelQueue()
        if q.waiting() >= self.limits.max_queued:
            raise ApiError(429, f"the engines for {model!r} are saturated and {q.waiting()} requests wait already",
                           code="queue_full", retry_after_s=2)  # fmt: skip
        start = max(q.vtime, q.last_tag.get(tenant.id, 0.0))
        tag = q.last_tag[tenant.id] = start + 1.0 / tenant.weight
        w = _Waiter(_RANK[tenant.priority], tag, next(self._seq), tenant.priority,
                    asyncio.get_running_loop().create_future())  # fmt: skip
        heapq.heappush(q.heap, w)
        if q.pump is None or q.pump.done():
            q.pump = asyncio.ensure_future(self._pump(model, q))
        q.wake.set()
        gauge = self.metrics.queued.labels("admission")
        gauge.inc()
        t0 = time.perf_counter()
        wait_s = self.limits.max_queue_wait_s
        try:
            await asyncio.wait_for(asyncio.shield(w.future), wait_s)
        except TimeoutError:
            if not _let_through(w):
                w.future.cancel()  # dropped from the queue (lazily)
                raise ApiError(503, f"the engines for {model!r} stayed saturated for {wait_s:g}s",
                               code="queue_timeout", retry_after_s=max(1.0, wait_s / 4)) from None  # fmt: skip
        except asyncio.CancelledError:  # the client left
            if _let_through(w):
                q.reserved -= 1  # give the slot back
                q.wake.set()
            else:
                w.future.cancel()
            raise
        finally:
            gauge.dec()
        q.reserved -= 1
        self.metrics.queue_wait.labels(model, "admission").observe(time.perf_counter() - t0)
        return q.endpoints or endpoints

    async def _pump(self, model: str, q: _ModelQueue) -> None:
        while q.heap:
            try:
                endpoints = await self.candidates(model)
            except Exception:  # an unreachable registry: try again at the next tick
                endpoints = []
            q.endpoints = endpoints
            self._let_through(q, endpoints)
            if not q.heap:
                return
            q.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.wake.wait(), POLL_S)

    def _let_through(self, q: _ModelQueue, endpoints: Sequence[Endpoint]) -> None:
        while q.heap:
            w = q.heap[0]
            if w.future.done():  # timed out or left
                heapq.heappop(q.heap)
                continue
            if not endpoints or self.free(endpoints, w.priority) <= q.reserved:
                return
            heapq.heappop(q.heap)
            q.vtime = max(q.vtime, w.tag)
            q.reserved += 1
            w.future.set_result(None)
