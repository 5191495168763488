"""The gateway's copy of the engine registry: refreshed in the background, one refresh at a time;
a request waits for the registry actor only while the copy is empty or has not been refreshed for
``max_stale_s`` (no traffic for a while)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.registry import Endpoint, RegistryEndpoints

pytestmark = pytest.mark.unit


def record(n: int) -> dict[str, Any]:
    return Endpoint(replica_id=f"r{n}", url=f"http://127.0.0.1:{9000 + n}", model="m", engine="simulator").to_dict()


class SlowRegistry:
    """Stands in for the actor handle: ``snapshot.remote()`` answers when ``release`` is set."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records, self.calls = records, 0
        self.release = asyncio.Event()
        self.snapshot = self

    def remote(self) -> Any:
        self.calls += 1

        async def answer() -> list[dict[str, Any]]:
            await self.release.wait()
            return list(self.records)

        return answer()


async def test_a_stale_copy_is_refreshed_once_in_the_background_while_requests_route_on_it():
    src = RegistryEndpoints(refresh_s=0.0, max_stale_s=60.0)  # every call finds the copy due a refresh
    reg = SlowRegistry([record(1)])
    src._actor = reg
    reg.release.set()
    assert [e.replica_id for e in await src.endpoints()] == ["r1"]  # empty copy: the first request waits
    assert reg.calls == 1

    reg.release.clear()  # the registry is slow now, and has a second engine
    reg.records = [record(1), record(2)]
    got = await asyncio.wait_for(asyncio.gather(*(src.endpoints() for _ in range(50))), timeout=1.0)
    assert all([e.replica_id for e in g] == ["r1"] for g in got)  # nobody waited for the actor
    assert reg.calls == 2  # 50 requests, one refresh in flight

    reg.release.set()
    await asyncio.sleep(0.01)
    assert [e.replica_id for e in await src.endpoints()] == ["r1", "r2"]


async def test_an_empty_copy_waits_for_the_registry_so_a_cold_start_sees_new_engines():
    src = RegistryEndpoints(refresh_s=0.0)
    reg = SlowRegistry([])
    src._actor = reg
    reg.release.set()
    assert await src.endpoints() == []
    reg.records = [record(3)]
    assert [e.replica_id for e in await src.endpoints()] == ["r3"]


async def test_a_copy_left_unrefreshed_past_max_stale_waits_for_the_registry():
    src = RegistryEndpoints(refresh_s=0.0, max_stale_s=0.0)  # every copy is too old to route on
    reg = SlowRegistry([record(1)])
    src._actor = reg
    reg.release.set()
    assert [e.replica_id for e in await src.endpoints()] == ["r1"]
    reg.records = []  # the engine scaled away while no request came
    assert await src.endpoints() == []
