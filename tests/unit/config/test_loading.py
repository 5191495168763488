"""Settings sources, precedence, typo'd keys and secrets."""

from __future__ import annotations

import pytest

from serving.config import ConfigError, load_settings, settings_from_wire, settings_to_wire

pytestmark = pytest.mark.unit


def test_precedence_cli_over_env_over_yaml(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("gateway:\n  port: 7000\n  host: 0.0.0.0\nrouting:\n  policy: round_robin\n")
    env = {"QWEN_SERVE_GATEWAY__PORT": "7100", "QWEN_SERVE_ROUTING__POLICY": "prefix_affinity"}
    s = load_settings(cfg, ["gateway.port=7200"], env=env)
    assert s.gateway.port == 7200  # CLI wins
    assert s.routing.policy.value == "prefix_affinity"  # env beats YAML
    assert s.gateway.host == "0.0.0.0"  # YAML beats defaults


def test_config_file_from_env_variable(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("gateway:\n  port: 7001\n")
    assert load_settings(env={"QWEN_SERVE_CONFIG": str(cfg)}).gateway.port == 7001


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("gateway:\n  prot: 1\n", "gateway.prot"),
        ("paralelism:\n  tp: 2\n", "paralelism"),
        ("gateway:\n  port: eighty\n", "gateway.port"),
        ("parallelism:\n  tp: 0\n", "parallelism.tp"),
        ("memory:\n  mem_fraction: 1.5\n", "memory.mem_fraction"),
        ("engine:\n  kind: tensorrt\n", "engine.kind"),
        ("routing:\n  policy: random\n", "routing.policy"),
    ],
)
def test_bad_yaml_values_name_the_field(tmp_path, yaml_text, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert field in {p.field for p in info.value.problems}


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [unclosed\n", "\x00\x01"])
def test_malformed_yaml_is_one_clear_error(tmp_path, text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert info.value.problems[0].field == "config"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        load_settings(overrides=["gateway.port"], env={})


def test_secrets_are_redacted_but_travel_on_the_wire():
    s = load_settings(
        overrides={"engine": {"api_key": "engine-secret"}, "gateway": {"api_keys": {"keys": ["k-secret"]}}}, env={}
    )
    dumped = str(s.redacted())
    assert "engine-secret" not in dumped
    assert "k-secret" not in dumped
    assert "engine-secret" not in repr(s)
    back = settings_from_wire(settings_to_wire(s))
    assert back.engine.api_key is not None
    assert back.engine.api_key.get_secret_value() == "engine-secret"
    assert back.gateway.api_keys.keys[0].get_secret_value() == "k-secret"


def test_env_nested_json_list():
    s = load_settings(env={"QWEN_SERVE_GATEWAY__API_KEYS__KEYS": '["a","b"]'})
    assert [k.get_secret_value() for k in s.gateway.api_keys.keys] == ["a", "b"]
