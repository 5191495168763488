"""The chart's PrometheusRule, rendered by Helm, checked and unit-tested by Prometheus's own
promtool: every alert is shown firing and not firing (alerts.test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from obs_support import tool, write_rules

pytestmark = pytest.mark.integration

TESTS = Path(__file__).with_name("alerts.test.yaml")
REQUIRED_ALERTS = {  # what an operator must be told about
    "QwenServeEngineDown",
    "QwenServeTTFTBudgetBurn",
    "QwenServeQueueDepthHigh",
    "QwenServeErrorRateHigh",
    "QwenServeReplicaRestarts",
    "QwenServeTTFTp95High",
}


def _alerts(rules: dict) -> set[str]:
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_rendered_rules_pass_promtool_check(tmp_path):
    rules = write_rules(tmp_path / "rules.yaml")
    assert _alerts(rules) >= REQUIRED_ALERTS
    out = subprocess.run([tool("promtool"), "check", "rules", str(tmp_path / "rules.yaml")],
                         check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    spec = yaml.safe_load(TESTS.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in spec["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert fired >= REQUIRED_ALERTS, REQUIRED_ALERTS - fired
    assert quiet >= REQUIRED_ALERTS, REQUIRED_ALERTS - quiet


def test_alert_unit_tests_pass_under_promtool(tmp_path):
    rules = write_rules(tmp_path / "rules.yaml")
    shutil.copy(TESTS, tmp_path / TESTS.name)
    out = subprocess.run([tool("promtool"), "test", "rules", TESTS.name], cwd=tmp_path,
                         check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    spec = yaml.safe_load(TESTS.read_text())
    tested = {t["alertname"] for c in spec["tests"] for t in c.get("alert_rule_test", [])}
    assert _alerts(rules) <= tested, _alerts(rules) - tested
