"""Bad values never render: values.schema.json or a template `fail` names the value and the fix.
Rules about the settings tree that JSON Schema cannot state (min ≤ max replicas, nodes dividing
ranks, …) are Python's: they fail the app at deploy time (tests/unit/deploy)."""

from __future__ import annotations

from typing import Any

import pytest
from helm_support import CHART

pytestmark = pytest.mark.integration

S = "settings"
BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "tp not dividing 24 heads",
        {S: {"parallelism": {"tp": 16}}},
        ["/settings/parallelism/tp", "1, 2, 3, 4, 6, 8, 12, 24"],
    ),
    (
        "tp not dividing 16 heads",
        {S: {"model": {"preset": "qwen3.6-35b-a3b"}, "parallelism": {"tp": 6}}},
        ["/settings/parallelism/tp", "1, 2, 4, 8, 16"],
    ),
    ("wrong type", {S: {"parallelism": {"tp": "8"}}}, ["/settings/parallelism/tp", "want integer"]),
    ("unknown settings key", {S: {"modle": {"preset": "qwen3.6-27b"}}}, ["/settings", "'modle' not allowed"]),
    (
        "unknown key in a section",
        {S: {"autoscaling": {"max_replica": 3}}},
        ["/settings/autoscaling", "'max_replica' not allowed"],
    ),
    ("unknown chart key", {"head": {"replicas": 2}}, ["/head", "'replicas' not allowed"]),
    ("unknown preset", {S: {"model": {"preset": "qwen3.6-72b"}}}, ["/settings/model/preset", "qwen3.6-27b"]),
    ("':' in served name", {S: {"model": {"served_name": "qwen:27b"}}}, ["/settings/model/served_name"]),
    ("engine key in values", {S: {"engine": {"api_key": "sk-abc"}}}, ["/settings/engine/api_key", "want null"]),
    (
        "api keys in settings",
        {S: {"gateway": {"api_keys": {"keys": ["sk-0123456789abcdef"]}}}},
        ["/settings/gateway/api_keys/keys"],
    ),
    ("pp with MTP on", {S: {"parallelism": {"pp": 2, "nodes": 2}}}, ["/settings/speculative/enabled", "false"]),
    ("negative min replicas", {S: {"autoscaling": {"min_replicas": -1}}}, ["/settings/autoscaling/min_replicas"]),
    (
        "layout the placement rules refuse",
        {S: {"parallelism": {"tp": 8, "nodes": 3}}},
        ["settings.parallelism", "8/1/1/3", "serving config validate"],
    ),
    ("no worker group", {"workerGroups": []}, ["/workerGroups", "minItems"]),
    ("bad group name", {"workerGroups": [{"name": "H100_A"}]}, ["/workerGroups/0/name"]),
    (
        "duplicate group names",
        {"workerGroups": [{"name": "a"}, {"name": "a"}]},
        ['workerGroups: name "a" is used twice'],
    ),
    ("short API key", {"secrets": {"apiKeys": ["short"]}}, ["/secrets/apiKeys/0", "minLength"]),
    (
        "a plain key as a tenant's key",
        {"secrets": {"tenants": [{"name": "acme", "keys": ["sk-acme-0123456789abcdef"]}]}},
        ["/secrets/tenants/0/keys/0", "pattern"],
    ),
    (
        "unknown tenant field",
        {
            "secrets": {
                "tenants": [
                    {
                        "name": "acme",
                        "colour": "red",
                        "keys": ["0000000000000000000000000000000000000000000000000000000000000000"],
                    }
                ]
            }
        },
        ["/secrets/tenants/0", "'colour' not allowed"],
    ),
    (
        "tenant priority",
        {
            "secrets": {
                "tenants": [
                    {
                        "name": "acme",
                        "priority": "urgent",
                        "keys": ["0000000000000000000000000000000000000000000000000000000000000000"],
                    }
                ]
            }
        },
        ["/secrets/tenants/0/priority", "interactive"],
    ),
    (
        "tenants and plain keys",
        {
            "secrets": {
                "apiKeys": ["sk-0123456789abcdef"],
                "tenants": [
                    {"name": "a", "keys": ["0000000000000000000000000000000000000000000000000000000000000000"]}
                ],
            }
        },
        ["give apiKeys or tenants, not both", "sha256sum"],
    ),
    (
        "duplicate tenant names",
        {
            "secrets": {
                "tenants": [
                    {"name": "a", "keys": ["0000000000000000000000000000000000000000000000000000000000000000"]},
                    {"name": "a", "keys": ["0000000000000000000000000000000000000000000000000000000000000000"]},
                ]
            }
        },
        ['secrets.tenants: name "a" is used twice'],
    ),
    ("service type", {"service": {"type": "External"}}, ["/service/type"]),
    ("bad quantity", {"modelCache": {"size": "lots"}}, ["/modelCache/size"]),
    ("ingress without host", {"ingress": {"enabled": True, "host": ""}}, ["ingress.host"]),
    (
        "object store without command",
        {"modelCache": {"download": {"url": "s3://bucket/qwen"}}},
        ["modelCache.download.url needs"],
    ),
]


@pytest.mark.parametrize(("case", "values", "wanted"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_refused_with_a_readable_message(case: str, values: dict[str, Any], wanted: list[str]) -> None:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as err:
        chart.render(values=values, name="qwen", namespace="llm")
    message = str(err.value)
    for part in wanted:
        assert part in message, f"{case}: {part!r} not in:\n{message}"
    assert "Traceback" not in message


def test_schema_cases_cover_ten_kinds() -> None:
    schema_cases = [c for c in BAD if any(w.startswith("/") for w in c[2])]
    assert len(schema_cases) >= 10
