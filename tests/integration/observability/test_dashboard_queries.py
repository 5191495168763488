"""The dashboard reads what the chart's PrometheusRule records: every ``qwen_serve:*`` series a
panel queries is a recording rule of the rendered chart, and only the board's own variables are
used. (That each query returns data from a running stack is tests/e2e/test_observability_prometheus.py.)"""

from __future__ import annotations

import json
import re

import pytest
from obs_support import DASHBOARD, dashboard_targets, rendered_rules

pytestmark = pytest.mark.integration

OPERATOR_QUESTIONS = [  # panel title fragments an operator looks for
    "requests/s by status", "Time to first token", "Time to first answer token", "Output tokens/s",
    "running requests", "queued requests", "pool usage", "cache hit rate", "Admission rejections",
    "autoscaling target", "MTP acceptance length",
]  # fmt: skip


def test_every_recorded_series_the_dashboard_reads_is_a_rule_of_the_chart():
    recorded = {r["record"] for g in rendered_rules()["groups"] for r in g["rules"] if "record" in r}
    used = {m for _, _, expr in dashboard_targets() for m in re.findall(r"qwen_serve:[a-z0-9_:]+", expr)}
    assert used, "the dashboard reads no recording rule"
    assert used <= recorded, used - recorded


def test_the_dashboard_answers_the_operators_questions_and_uses_only_its_variables():
    board = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in board["panels"]]
    for q in OPERATOR_QUESTIONS:
        assert any(q.lower() in t.lower() for t in titles), q
    variables = {v["name"] for v in board["templating"]["list"]}
    for p in board["panels"]:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            assert set(re.findall(r"\$(\w+)", t["expr"])) <= variables, t["expr"]
            assert 'namespace="$namespace"' in t["expr"], t["expr"]  # one release's namespace at a time
