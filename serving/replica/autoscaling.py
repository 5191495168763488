"""Autoscaling on engine load: Ray Serve's custom-metric policy.

Each replica reports ``engine_load`` (running + queued requests read from its engine's /metrics)
through ``record_autoscaling_stats``; the controller averages it over ``look_back_period_s`` per
replica and calls :func:`engine_load_policy`, which asks for ``ceil(total load / target)``
replicas. Serve's wrapper then applies upscale/downscale delays and the scaling factors; the
policy itself clamps to the min/max bounds.

This module is pickled by value into the Serve controller: it must import nothing from
``serving`` (the controller may not have the package importable).
"""

from __future__ import annotations

import math
from typing import Any

ENGINE_LOAD_METRIC = "engine_load"
POLICY_PATH = "serving.replica.autoscaling:engine_load_policy"


def desired_replicas(loads: list[float], target: float, current: int, lo: int, hi: int) -> int:
    """Replicas needed for the summed engine load at ``target`` per replica, within [lo, hi].
    No report yet (replicas still starting): keep ``current``."""
    if not loads:
        return max(lo, min(hi, current))
    want = math.ceil(sum(loads) / target) if sum(loads) > 0 else 0
    return max(lo, min(hi, want))


def engine_load_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """``AutoscalingConfig.policy`` function (Ray Serve ≥ 2.50 custom-metric policies)."""
    per_replica = (ctx.aggregated_metrics or {}).get(ENGINE_LOAD_METRIC, {})
    target = float(ctx.config.get_target_ongoing_requests())
    want = desired_replicas(
        [float(v) for v in per_replica.values()],
        target,
        ctx.target_num_replicas,
        ctx.capacity_adjusted_min_replicas,
        ctx.capacity_adjusted_max_replicas,
    )
    if want == 0 and ctx.current_num_replicas == 0:
        # scaled to zero: no engine reports load, so wake on requests waiting at handles (the
        # gateway makes one such call when it finds no engine registered)
        waiting = ctx.total_num_requests
        waiting = waiting() if callable(waiting) else waiting
        if waiting and float(waiting) > 0:
            want = min(1, ctx.capacity_adjusted_max_replicas)
    return want, {}
