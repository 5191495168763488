"""A deployment scaled to zero is woken by the gateway (one throttled handle call); an engine that
answers 503 while it starts or lost a rank gives clients a 503 with Retry-After, not a 502."""

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


@pytest.mark.parametrize(("status", "want", "retry_after"), [(503, 503, "2"), (500, 502, None), (400, 400, None)])
def test_engine_errors_keep_their_meaning(status, want, retry_after):
    from serving.gateway.errors import from_upstream

    err = from_upstream(status, b'{"error": {"message": "rank 1 lost"}}')
    resp = err.response("rid")
    assert resp.status_code == want
    assert resp.headers.get("retry-after") == retry_after
