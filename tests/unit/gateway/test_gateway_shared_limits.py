"""Rate limits shared across gateway replicas: each replica leases blocks from one set of global
buckets, so a tenant's requests/min hold across replicas, with one lease per block (not per
request); an unreachable actor falls back to the replica's own limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.config import load_settings
from serving.gateway.errors import ApiError
from serving.gateway.shared_limits import SharedBuckets, SharedRateLimiter

pytestmark = pytest.mark.unit


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeActor:
    """``actor.lease.remote(...)`` as a Ray actor handle offers it, over one SharedBuckets."""

    def __init__(self, state: SharedBuckets | None) -> None:
        self.state = state
        self.lease = self

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            if self.state is None:
                raise ConnectionError("actor gone")
            return self.state.lease(*args)

        return call()


def limiter(actor: FakeActor, clock: Clock, **limits: Any) -> SharedRateLimiter:
    lim = load_settings(overrides={"gateway": {"limits": limits}}, env={}).gateway.limits
    return SharedRateLimiter(lim, actor, clock)


async def admitted(replicas: list[SharedRateLimiter], n: int) -> int:
    ok, refusals = 0, []
    for i in range(n):
        try:
            await replicas[i % len(replicas)].admit_shared("tenant:t", 1, None, None)
            ok += 1
        except ApiError as e:
            refusals.append(e)
    assert all(e.status == 429 and e.retry_after_s for e in refusals)
    return ok


async def test_a_tenants_requests_per_min_hold_across_replicas_with_one_lease_per_block():
    clock = Clock()
    actor = FakeActor(SharedBuckets(clock))
    replicas = [limiter(actor, clock, requests_per_min=20, lease_fraction=0.25) for _ in range(2)]
    assert await admitted(replicas, 30) == 20  # not 2 × 20
    # blocks of 5: 4 granted leases, then one refused ask per replica (refusals are remembered)
    assert sum(r.leases for r in replicas) == 20 / 5 + 2
    clock.t += 60  # a minute later the bucket is full again
    assert await admitted(replicas, 5) == 5


async def test_an_unreachable_actor_falls_back_to_the_replicas_own_limits():
    replica = limiter(FakeActor(None), Clock(), requests_per_min=3)
    assert await admitted([replica], 5) == 3


class SlowActor(FakeActor):
    """Each lease answers only after the event loop has run other requests (a real round trip)."""

    def __init__(self, state: SharedBuckets) -> None:
        super().__init__(state)
        self.calls = 0

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            self.calls += 1
            await asyncio.sleep(0.01)
            assert self.state is not None
            return self.state.lease(*args)

        return call()


async def test_concurrent_requests_of_one_replica_lose_no_leased_capacity():
    """Requests arriving together while a lease is on its way: every unit the actor granted is
    spent or still held by the replica (none overwritten), and one lease serves them all."""
    clock = Clock()
    state = SharedBuckets(clock)
    actor = SlowActor(state)
    lim = limiter(actor, clock, requests_per_min=100, lease_fraction=0.2)  # blocks of 20

    async def one() -> bool:
        try:
            await lim.admit_shared("tenant:t", 1, None, None)
            return True
        except ApiError:
            return False

    results = await asyncio.gather(*(one() for _ in range(10)))
    assert all(results)
    assert actor.calls == 1
    granted = 100 - state._buckets[("tenant:t", "req")].level
    assert granted == sum(results) + lim._allowance[("tenant:t", "req")]
