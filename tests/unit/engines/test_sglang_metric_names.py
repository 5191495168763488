"""Every SGLang metric name the project reads exists in SGLang 0.5.23's metrics code (read from the
wheel's source by tests/sglang_oracle.py): the replica's running / queued load (which the
autoscaler scales on), the Helm chart's PrometheusRule (whose engine-neutral recording rules the
Grafana dashboard reads: tests/integration/observability/test_dashboard_queries.py), and the routing
benchmark."""

from __future__ import annotations

import re
from typing import Any

import pytest

from serving.engines.sglang import SGLangEngine
from serving.engines.simulator.args import parse_args
from serving.engines.simulator.server import Simulator
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

NAME = re.compile(r"sglang:[A-Za-z0-9_:]+")
READERS = [
    "helm/qwen-serve/templates/prometheusrule.yaml",
    "bench/routing.py",
]


def names_in(path: str) -> set[str]:
    return set(NAME.findall((ROOT / path).read_text(encoding="utf-8")))


def test_replica_load_metrics_exist_in_sglang(sglang: Any) -> None:
    declared = sglang.metric_names()
    assert declared[SGLangEngine.running_metric] == "Gauge"
    assert declared[SGLangEngine.queued_metric] == "Gauge"


@pytest.mark.parametrize("path", READERS)
def test_dashboards_alerts_and_benchmarks_read_only_sglang_metrics(sglang: Any, path: str) -> None:
    found = names_in(path)
    assert found, f"{path} reads no sglang: metric (the test would prove nothing)"
    assert sorted(found - set(sglang.metric_names())) == []


def test_the_simulator_declares_only_sglang_metrics(sglang: Any) -> None:
    sim = Simulator(parse_args(["--sim-preset", "qwen3.6-27b", "--enable-metrics"]))
    families = {m.name for m in sim.metrics.registry.collect()}
    assert families
    assert (
        sorted(f for f in families if f not in sglang.metric_names() and f"{f}_total" not in sglang.metric_names())
        == []
    )


def test_a_name_sglang_does_not_declare_is_caught(sglang: Any) -> None:
    # Names that look right but SGLang does not declare (vLLM's spelling, a dropped unit) are caught.
    declared = sglang.metric_names()
    for wrong in ("sglang:num_requests_running", "sglang:queue_reqs", "sglang:time_to_first_token_bucket"):
        assert wrong not in declared
    assert "sglang:time_to_first_token_seconds_bucket" in declared
    assert "sglang:generation_tokens_total" in declared
