"""Shared rate limits on real Ray: two gateway replicas' limiters lease from the one detached
actor, so a tenant's requests/min holds for the two together."""

from __future__ import annotations

import pytest

from serving.config import load_settings
from serving.gateway.errors import ApiError
from serving.gateway.shared_limits import SharedRateLimiter

pytestmark = pytest.mark.integration


async def test_two_replicas_share_one_requests_per_min_budget():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        limits = {"requests_per_min": 12, "lease_fraction": 0.25, "share_across_replicas": True}
        lim = load_settings(overrides={"gateway": {"limits": limits}}, env={}).gateway.limits
        replicas = [SharedRateLimiter(lim), SharedRateLimiter(lim)]
        ok, refusals = 0, []
        for i in range(30):
            try:
                await replicas[i % 2].admit_shared("tenant:t", 1, None, None)
                ok += 1
            except ApiError as e:
                refusals.append(e.status)
        refused = len(refusals)
        assert set(refusals) == {429}
        print(
            f"\nshared limit 12/min over 2 replicas: {ok} admitted, {refused} refused, "
            f"{sum(r.leases for r in replicas)} actor calls for 30 requests"
        )
        assert ok == 12
    finally:
        ray.shutdown()
