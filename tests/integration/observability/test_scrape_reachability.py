"""Every port the chart's ServiceMonitor scrapes exists on the pods it selects and is open, in the
chart's NetworkPolicies, to the scrapers named in ``networkPolicy.metricsFrom`` — even when the
gateway port is restricted to an ingress controller by ``networkPolicy.gatewayFrom``."""

from __future__ import annotations

from typing import Any

import pytest
from obs_support import rendered_chart, service_monitor_targets

pytestmark = pytest.mark.integration

SCRAPERS = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]


def _open_to_scrapers(policies: list[dict[str, Any]], pod_labels: dict[str, str], port: int) -> bool:
    for pol in policies:
        sel = pol["spec"]["podSelector"].get("matchLabels", {})
        if not sel.items() <= pod_labels.items():
            continue
        for rule in pol["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if rule.get("from") == SCRAPERS and (not ports or port in ports):
                return True
    return False


def test_every_scraped_port_is_on_its_pods_and_open_to_the_metrics_scrapers():
    docs = rendered_chart()  # EVERYTHING_ON: gatewayFrom = the ingress namespace only
    targets = service_monitor_targets(docs)
    assert {t["endpoint"] for t in targets} == {"ray-metrics", "engine", "gateway"}
    assert {(t["endpoint"], t["role"]) for t in targets} >= {("gateway", "head"), ("engine", "worker")}
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for t in targets:
        assert t["path"] == "/metrics"
        assert _open_to_scrapers(policies, t["pod_labels"], t["number"]), t
