"""A deployment scaled to zero is woken by the gateway through one handle call, throttled."""

from __future__ import annotations

import pytest

from serving.gateway.deployment import WakeOnEmpty
from serving.registry import Endpoint, StaticEndpoints

pytestmark = pytest.mark.unit


class Handle:
    def __init__(self) -> None:
        self.calls = 0
        self.info = self

    def remote(self) -> None:
        self.calls += 1


async def test_empty_registry_wakes_the_engines_once_per_period():
    handle = Handle()
    src = WakeOnEmpty(StaticEndpoints([]), handle, every_s=60.0)
    assert await src.endpoints() == []
    assert await src.endpoints() == []
    assert handle.calls == 1


async def test_live_engines_need_no_wake_up():
    handle = Handle()
    ep = Endpoint("r", "http://127.0.0.1:1", "m", "simulator")
    src = WakeOnEmpty(StaticEndpoints([ep]), handle)
    assert list(await src.endpoints()) == [ep]
    assert handle.calls == 0
