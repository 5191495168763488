"""The local stack's Ray environment: the ingress path plus private ports for HAProxy's and direct
ingress's fixed port numbers, never overriding what the user set."""

from __future__ import annotations

import pytest

from serving.config import load_settings
from serving.local import local_node_env

pytestmark = pytest.mark.unit


def test_haproxy_gets_private_stats_metrics_and_replica_ports():
    env = local_node_env(load_settings(env={}), {})
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    ports = [int(env[k]) for k in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")]
    low, high = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    assert not (low <= 30000 <= high)  # SGLang's default engine port stays outside the range
    assert all(p > high for p in ports)
    assert len(set(ports)) == 2


def test_user_settings_win_and_proxy_path_needs_only_the_controller_beat():
    env = local_node_env(load_settings(env={}), {"RAY_SERVE_HAPROXY_STATS_PORT": "18404"})
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in env
    proxy = load_settings(overrides={"gateway": {"ingress": "proxy"}}, env={})
    assert local_node_env(proxy, {}) == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
    assert local_node_env(proxy, {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}) == {}
