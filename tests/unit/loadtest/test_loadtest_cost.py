"""$ per million tokens, price tables, GPU-hour integration and the two GPU-usage sources."""

from types import SimpleNamespace as NS

import pytest

from loadtest.cost import HOURS_PER_MONTH, load_prices, monthly_usd, split_by_gpu_time, token_cost
from loadtest.gpu_usage import KubernetesUsage, RayServeUsage, StaticUsage, gpu_hours, usage_from_pods

pytestmark = pytest.mark.unit


def test_token_cost_splits_the_bill_and_adds_back_up():
    c = token_cost(
        gpu_hours=2.0, usd_per_gpu_hour=3.0, input_tokens=4_000_000, output_tokens=1_000_000, input_weight=0.25
    )
    assert c.total_usd == pytest.approx(6.0)
    # 1 M output + 0.25 × 4 M input = 2 M output-equivalents → $3 per M output, $0.75 per M input
    assert c.usd_per_million_output == pytest.approx(3.0)
    assert c.usd_per_million_input == pytest.approx(0.75)
    assert 4 * c.usd_per_million_input + 1 * c.usd_per_million_output == pytest.approx(c.total_usd)


def test_gpu_time_split_charges_prefill_time_to_input_and_adds_back_up():
    # $7.2/h replica, 2 req/s of 1000 prompt + 200 output tokens, 30 % of its GPU time in prefills
    p = split_by_gpu_time(7.2, 2.0, 1000, 200, 0.3)
    usd_per_s = 7.2 / 3600
    assert p.usd_per_million_input == pytest.approx(usd_per_s * 0.3 / 2000 * 1e6)  # $0.30/M in
    assert p.usd_per_million_output == pytest.approx(usd_per_s * 0.7 / 400 * 1e6)  # $3.50/M out
    per_s = 2000 * p.usd_per_million_input / 1e6 + 400 * p.usd_per_million_output / 1e6
    assert per_s == pytest.approx(usd_per_s)  # the two prices pay the replica, no more, no less
    assert p.usd_per_million_output_all == pytest.approx(usd_per_s / 400 * 1e6)  # input free: $5/M out
    free_input = split_by_gpu_time(7.2, 2.0, 1000, 200, 0.0)
    assert free_input.usd_per_million_input == 0.0
    assert free_input.usd_per_million_output == pytest.approx(free_input.usd_per_million_output_all)
    with pytest.raises(ValueError, match="prefill share"):
        split_by_gpu_time(7.2, 2.0, 1000, 200, 1.5)
    with pytest.raises(ValueError, match="requests/s > 0"):
        split_by_gpu_time(7.2, 0.0, 1000, 200, 0.3)


def test_token_cost_without_tokens_has_no_price():
    c = token_cost(1.0, 2.0, 0, 0)
    assert c.total_usd == 2.0
    assert c.usd_per_million_output is None


def test_price_table_defaults_are_dated_and_overridable():
    t = load_prices()
    assert t.as_of
    assert "placeholder" in t.basis
    assert set(t.usd_per_gpu_hour) >= {"h100", "h200", "b200"}
    t2 = t.with_overrides(["h100=2.5", "mi300x=3"])
    assert t2.price("h100") == 2.5
    assert t2.price("mi300x") == 3.0
    with pytest.raises(ValueError, match="TYPE=USD"):
        t.with_overrides(["h100"])
    with pytest.raises(ValueError, match="no \\$/GPU-hour"):
        t.price("tpu")
    assert monthly_usd(8, 2.0) == pytest.approx(8 * 2.0 * HOURS_PER_MONTH)


def test_gpu_hours_hold_each_sample_until_the_next():
    # 8 GPUs for 1800 s, then 16 for 3600 s → 4 + 16 = 20 GPU-hours
    assert gpu_hours([(0.0, 8), (1800.0, 16)], 5400.0) == pytest.approx(20.0)
    assert gpu_hours([], 10.0) == 0.0
    with pytest.raises(ValueError, match="time order"):
        gpu_hours([(10.0, 1)], 5.0)


def pod(phase, *gpu_requests, limits_only=False):
    containers = []
    for g in gpu_requests:
        res = {"nvidia.com/gpu": str(g)}
        containers.append(NS(resources=NS(requests=None if limits_only else res, limits=res)))
    return NS(status=NS(phase=phase), spec=NS(containers=containers))


def test_kubernetes_usage_sums_gpu_requests_of_running_pods():
    pods = NS(
        items=[
            pod("Running", 8),
            pod("Running", 4, 4),
            pod("Pending", 8),
            pod("Running", 2, limits_only=True),
            pod("Running"),
        ]
    )
    u = usage_from_pods(pods, "h100")
    assert (u.replicas, u.gpus) == (3, 18)
    calls = []
    src = KubernetesUsage("ns", "h200", list_pods=lambda ns, sel: calls.append((ns, sel)) or pods)
    assert src.sample().gpus == 18
    assert calls[0][0] == "ns"
    assert "app.kubernetes.io/component=engine" in calls[0][1]


def test_ray_serve_usage_counts_running_replicas():
    rest = {
        "applications": {
            "qwen-serve": {
                "deployments": {
                    "EngineReplica": {"replicas": [{"state": "RUNNING"}, {"state": "RUNNING"}, {"state": "STARTING"}]}
                }
            }
        }
    }
    assert RayServeUsage(4, "h100", fetch=lambda: rest).sample().gpus == 8
    status = {"applications": {"qwen-serve": {"deployments": {"EngineReplica": {"replica_states": {"RUNNING": 3}}}}}}
    assert RayServeUsage(2, "h100", fetch=lambda: status).sample().replicas == 3
    assert RayServeUsage(2, "h100", fetch=lambda: {"applications": {}}).sample().gpus == 0
    assert StaticUsage(3, 8, "b200").sample().gpus == 24
