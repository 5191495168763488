"""Placement bundles, deployment options and the engine-load autoscaling policy, from settings."""

from __future__ import annotations

import time
from typing import Any

import pytest
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from serving.config import load_settings
from serving.replica.autoscaling import ENGINE_LOAD_METRIC, POLICY_PATH, desired_replicas, engine_load_policy
from serving.replica.deployment import EngineReplica, engine_deployment_options
from serving.replica.placement import cuda_visible_devices, placement

pytestmark = pytest.mark.unit


def settings(**over: Any):
    base: dict[str, Any] = {"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "simulator", "port": 0}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return load_settings(overrides=base, env={})


def test_one_node_packs_one_bundle_with_all_its_gpus():
    pl = placement(settings(parallelism={"tp": 2, "gpus_per_node": 4, "cpus_per_rank": 1.5}))
    assert pl.bundles == [{"CPU": 1.5, "GPU": 2.0}]
    assert pl.strategy == "STRICT_PACK"
    assert pl.actor_resources() == {"num_cpus": 1.5, "num_gpus": 2.0}


def test_two_nodes_spread_one_bundle_per_node():
    pl = placement(settings(parallelism={"tp": 8, "nodes": 2, "gpus_per_node": 4, "cpus_per_rank": 0.5}))
    assert pl.bundles == [{"CPU": 0.5, "GPU": 4.0}, {"CPU": 0.5, "GPU": 4.0}]
    assert pl.strategy == "STRICT_SPREAD"


def test_cpu_engines_reserve_no_gpu():
    s = load_settings(overrides={"engine": {"kind": "llamacpp"}, "parallelism": {"cpus_per_rank": 2}}, env={})
    assert placement(s).bundles == [{"CPU": 2.0}]
    assert placement(s).actor_resources()["num_gpus"] == 0


def test_cuda_visible_devices_follows_assigned_ids():
    assert cuda_visible_devices([2, 3]) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert cuda_visible_devices(["0"]) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert cuda_visible_devices([]) == {}


def test_deployment_options_come_from_settings_and_serve_accepts_them():
    s = settings(
        parallelism={"tp": 8, "nodes": 2, "gpus_per_node": 4, "cpus_per_rank": 0.5},
        autoscaling={
            "min_replicas": 0,
            "max_replicas": 3,
            "target_load_per_replica": 4,
            "upscale_delay_s": 1,
            "downscale_delay_s": 5,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2,
        },
        replica={"health_check_period_s": 1, "health_check_timeout_s": 3, "drain_grace_s": 7},
    )
    opts = engine_deployment_options(s)
    assert opts["placement_group_bundles"] == [{"CPU": 0.5, "GPU": 4.0}] * 2
    assert opts["placement_group_strategy"] == "STRICT_SPREAD"
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 4.0}
    assert opts["health_check_period_s"] == 1
    assert opts["health_check_timeout_s"] == 3
    assert opts["graceful_shutdown_timeout_s"] > 7  # the drain fits inside Serve's force-kill deadline
    cfg = AutoscalingConfig(**opts["autoscaling_config"])
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_ongoing_requests) == (0, 3, 4)
    assert (cfg.upscale_delay_s, cfg.downscale_delay_s) == (1, 5)
    assert cfg.policy.policy_function == POLICY_PATH
    assert cfg.policy.get_policy() is not None  # importable and picklable by the controller
    dep = EngineReplica.options(**opts)  # Serve validates bundles vs actor resources here
    assert dep.name == "EngineReplica"


@pytest.mark.parametrize(
    ("loads", "target", "current", "lo", "hi", "want"),
    [
        ([], 4, 2, 1, 5, 2),  # no report yet: hold
        ([0.0], 4, 1, 0, 5, 0),  # idle and scale-to-zero allowed
        ([0.0], 4, 1, 1, 5, 1),  # idle: the floor
        ([9.0], 4, 1, 1, 5, 3),  # ceil(9 / 4)
        ([8.0, 8.0, 8.0], 4, 3, 1, 5, 5),  # capped at max
        ([1.0, 0.0, 2.0], 4, 3, 1, 5, 1),
    ],
)
def test_desired_replicas(loads, target, current, lo, hi, want):
    assert desired_replicas(loads, target, current, lo, hi) == want


def context(*, replicas: int, waiting: int, metrics: dict, lo: int, hi: int, target: float):
    """A real Serve AutoscalingContext as the controller builds it."""
    from ray.serve.config import AutoscalingConfig

    cfg = AutoscalingConfig(min_replicas=lo, max_replicas=hi, target_ongoing_requests=target)
    return AutoscalingContext(
        deployment_id=None,  # type: ignore[arg-type]
        deployment_name="EngineReplica",
        app_name="qwen-serve",
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        running_replicas=[],
        total_num_requests=waiting,
        total_queued_requests=waiting,
        aggregated_metrics=metrics,
        raw_metrics=None,
        capacity_adjusted_min_replicas=lo,
        capacity_adjusted_max_replicas=hi,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=time.time(),
        config=cfg,
    )


def test_policy_reads_the_engine_load_metric_from_serve_context():
    metrics = {ENGINE_LOAD_METRIC: {"r1": 7.0}, "other": {"r1": 100.0}}
    ctx = context(replicas=1, waiting=0, metrics=metrics, lo=1, hi=4, target=2)
    assert engine_load_policy(ctx) == (4, {})


@pytest.mark.parametrize(("waiting", "want"), [(0, 0), (3, 1)])
def test_policy_wakes_a_deployment_scaled_to_zero_on_waiting_requests(waiting: int, want: int) -> None:
    ctx = context(replicas=0, waiting=waiting, metrics={}, lo=0, hi=4, target=4)
    assert engine_load_policy(ctx)[0] == want
