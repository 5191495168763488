"""serving.deploy: the Serve config, schema and chart helpers derived from the settings tree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serving.app import app_builder
from serving.cli.main import app
from serving.config import PRESETS, ConfigError, Settings
from serving.deploy.chart_helpers import HELPERS_FILE, render_helpers
from serving.deploy.cli import merge_values
from serving.deploy.schema import CHART_DIR, SCHEMA_FILE, render_schema, settings_schema
from serving.deploy.serve_config import GATEWAY_RESOURCE, expanded_serve_config, serve_config

pytestmark = pytest.mark.unit


def _engine(cfg: dict) -> dict:
    return next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "EngineReplica")


def test_schema_file_is_generated_from_the_settings_tree() -> None:
    assert SCHEMA_FILE.read_text() == render_schema(), "run `serving deploy schema --write`"


def test_schema_covers_every_settings_section() -> None:
    schema, defs = settings_schema()
    assert set(schema["properties"]) == set(Settings.model_fields) - {"config"}
    assert schema["additionalProperties"] is False
    assert defs["ModelSettings"]["properties"]["preset"]["enum"] == list(PRESETS)


def test_tp_rules_are_the_divisors_of_each_presets_heads() -> None:
    schema, _ = settings_schema()
    for rule in schema["allOf"]:
        if "model" not in rule["if"]["properties"]:
            continue  # the pipeline-parallel rule
        names = rule["if"]["properties"]["model"]["properties"]["preset"]["enum"]
        allowed = rule["then"]["properties"]["parallelism"]["properties"]["tp"]["enum"]
        for name in names:
            heads = PRESETS[name].attention_heads
            assert allowed == [d for d in range(1, heads + 1) if heads % d == 0]


def test_chart_helpers_file_is_generated_from_python() -> None:
    assert HELPERS_FILE.read_text() == render_helpers(), "run `serving deploy helpers --write`"
    block = re.search(r'define "qwen-serve.presetRepos" -}}\n(.*?)\{\{- end', HELPERS_FILE.read_text(), re.S)
    assert block
    assert yaml.safe_load(block.group(1)) == {n: p.repo_id for n, p in PRESETS.items()}


def test_the_chart_restates_no_serve_option_only_the_settings_and_the_head_pin() -> None:
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    for derived in ("placement_group", "graceful_shutdown", "max_ongoing_requests", "num_cpus", "autoscaling_config"):
        assert derived not in helpers
    app = serve_config({})["applications"][0]
    assert set(app) == {"name", "route_prefix", "import_path", "args"}
    assert app["args"]["gateway_resources"] == {GATEWAY_RESOURCE: 1}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "autoscaling.min_replicas"),
        ({"autoscaling": {"initial_replicas": 5}}, "autoscaling.initial_replicas"),
        ({"parallelism": {"nodes": 3}, "speculative": {"enabled": False}}, "parallelism.nodes"),
        ({"parallelism": {"tp": 8, "gpus_per_node": 4}}, "parallelism.gpus_per_node"),
        ({"engine": {"kind": "llamacpp"}, "parallelism": {"gpu_type": "h100"}}, "parallelism.tp"),
        ({"parallelism": {"dp": 2, "nodes": 2}, "speculative": {"enabled": False}}, "parallelism.dp"),
    ],
)
def test_settings_that_cannot_run_fail_the_app_at_deploy_with_the_validate_message(
    settings: dict, field: str, tmp_path: Path
) -> None:
    """Rules only Python can check run when Serve builds the app from serveConfigV2's args, with
    the message `serving config validate` prints for the same settings."""
    base = {"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "sglang"}, "parallelism": {"tp": 8}}
    merged = {k: {**base.get(k, {}), **settings.get(k, {})} for k in {*base, *settings}}
    with pytest.raises(ConfigError) as at_deploy:
        app_builder({"settings": merged, "gateway_resources": {GATEWAY_RESOURCE: 1}})
    assert f"- {field}:" in str(at_deploy.value)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(merged))
    printed = CliRunner().invoke(app, ["config", "validate", str(f)])
    assert printed.exit_code == 2
    assert str(at_deploy.value) in printed.output


# Structured values documented as a whole by the comment on the key that holds them.
WHOLE_VALUES = {"resources", "podSecurityContext", "securityContext", "tolerations", "labels"}


def undocumented_values(text: str) -> list[str]:
    """Leaf keys of a values file without a comment line right above them."""
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z_][\w]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, rest = m.group(3), m.group(4).strip()
        is_section = rest == "" and i + 1 < len(lines) and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
        inside_whole = any(k in WHOLE_VALUES for _, k in stack)
        prev = lines[i - 1].strip().lstrip("- ")
        if not is_section and not inside_whole and not prev.startswith("#"):
            missing.append(f"line {i + 1}: {'.'.join([k for _, k in stack] + [key])}")
        stack.append((indent, key))
    return missing


def test_every_chart_value_has_a_comment() -> None:
    assert undocumented_values((CHART_DIR / "values.yaml").read_text()) == []


def test_the_comment_check_finds_a_missing_comment() -> None:
    assert undocumented_values("a:\n  # -- ok\n  b: 1\n  c: 2\n") == ["line 4: a.c"]


def test_serve_config_single_node_gpu() -> None:
    settings = {"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "sglang"}, "parallelism": {"tp": 4}}
    cfg = expanded_serve_config(settings)
    engine = _engine(cfg)
    assert engine["placement_group_bundles"] == [{"CPU": 8.0, "GPU": 4}]
    assert engine["placement_group_strategy"] == "STRICT_PACK"
    assert cfg["applications"][0]["import_path"] == "serving.app:app_builder"


def test_serve_config_multi_node_spreads_one_bundle_per_node() -> None:
    cfg = expanded_serve_config(
        {
            "model": {"preset": "qwen3.6-27b"},
            "engine": {"kind": "sglang"},
            "parallelism": {"tp": 8, "pp": 2, "nodes": 2},
            "speculative": {"enabled": False},
            "autoscaling": {"min_replicas": 0, "max_replicas": 3, "initial_replicas": 1},
        }
    )
    engine = _engine(cfg)
    assert engine["placement_group_bundles"] == [{"CPU": 8.0, "GPU": 8}] * 2
    assert engine["placement_group_strategy"] == "STRICT_SPREAD"
    assert engine["autoscaling_config"]["initial_replicas"] == 1
    assert engine["autoscaling_config"]["min_replicas"] == 0


def test_serve_config_on_cpu_asks_for_no_gpu() -> None:
    cfg = expanded_serve_config({"parallelism": {"gpu_type": "cpu", "cpus_per_rank": 2}})
    assert _engine(cfg)["placement_group_bundles"] == [{"CPU": 2.0}]


def test_serve_config_refuses_settings_that_cannot_run() -> None:
    with pytest.raises(ConfigError, match=r"parallelism\.tp"):
        serve_config({"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "sglang"}, "parallelism": {"tp": 16}})


def test_merge_values_is_helm_coalescing() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_values(base, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}}


def test_cli_serve_config_for_a_profile() -> None:
    result = CliRunner().invoke(
        app, ["deploy", "serve-config", "--expand", "-f", str(CHART_DIR / "values-35b-a3b.yaml")]
    )
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert _engine(cfg)["placement_group_bundles"] == [{"CPU": 16.0, "GPU": 4}]


def test_cli_names_the_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"settings": {"parallelism": {"tp": 5}}}))
    result = CliRunner().invoke(app, ["deploy", "serve-config", "-f", str(bad)])
    assert result.exit_code == 2
    assert "parallelism.tp" in result.output
    missing = CliRunner().invoke(app, ["deploy", "serve-config", "-f", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "file not found" in missing.output
