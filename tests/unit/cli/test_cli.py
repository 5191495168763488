"""The `serving` CLI: readable errors and exit 2 on bad input, never a traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from serving.cli.main import app

pytestmark = pytest.mark.unit
runner = CliRunner()
Q27_TP8 = ["--set", "model.preset=qwen3.6-27b", "--set", "engine.kind=sglang", "--set", "parallelism.tp=8"]


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env or {})


def test_launch_plan_json_for_machines():
    res = run("launch-plan", *Q27_TP8, "--json")
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert plan["engine"] == "sglang"
    assert plan["ranks"][0]["argv"][:3] == ["python", "-m", "sglang.launch_server"]


def test_launch_plan_for_one_rank_of_a_two_node_instance():
    res = run(
        "launch-plan",
        "--set",
        "model.preset=qwen3.6-35b-a3b",
        "--set",
        "engine.kind=sglang",
        "--set",
        "parallelism.tp=16",
        "--set",
        "parallelism.nodes=2",
        "--rank",
        "1",
        "--dist-init-addr",
        "head:5757",
    )
    assert res.exit_code == 0, res.output
    assert "--node-rank 1" in res.output
    assert "--dist-init-addr head:5757" in res.output
    assert "rank 0" not in res.output


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("model:\n  presett: qwen3.6-27b\n", "model.presett: unknown setting"),
        ("parallelism:\n  tp: many\n", "parallelism.tp"),
        ("model:\n  preset: qwen3.6-27b\nengine:\n  kind: sglang\nparallelism:\n  tp: 16\n", "parallelism.tp"),
        ("[1, 2", "config"),
    ],
)
def test_config_validate_bad_files(tmp_path, yaml_text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    res = run("config", "validate", str(f))
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output


def test_config_validate_good_file(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("model:\n  preset: qwen3.6-27b\nengine:\n  kind: sglang\nparallelism:\n  tp: 8\n")
    res = run("config", "validate", str(f))
    assert res.exit_code == 0, res.output
    assert "ok:" in res.output


def test_config_show_redacts_secrets():
    res = run("config", "show", "--json", env={"QWEN_SERVE_GATEWAY__API_KEYS__KEYS": '["very-secret-key"]'})
    assert res.exit_code == 0, res.output
    assert "very-secret-key" not in res.output
    assert json.loads(res.output)["gateway"]["api_keys"]["keys"] == ["**********"]


def test_unknown_rank_is_a_clear_error():
    res = run("launch-plan", *Q27_TP8, "--rank", "3")
    assert res.exit_code == 2
    assert "--rank" in res.output
