"""The simulator accepts every argv the launch plan produces for it, and rejects what SGLang would."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import load_settings
from serving.config.hardware import GpuType
from serving.engines import plan_instance
from serving.engines.simulator.args import parse_args

pytestmark = pytest.mark.unit

PRESETS = ["qwen3.6-27b", "qwen3.6-27b-fp8", "qwen3.6-35b-a3b", "qwen3.6-35b-a3b-fp8"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("gpu", "tp", "nodes"), [("h100", 2, 1), ("h200", 1, 1), ("b200", 8, 2)])
def test_every_plan_parses(preset: str, gpu: str, tp: int, nodes: int) -> None:
    s = load_settings(
        None,
        [
            "engine.kind=simulator",
            f"model.preset={preset}",
            f"parallelism.gpu_type={gpu}",
            f"parallelism.tp={tp}",
            f"parallelism.nodes={nodes}",
            "parallelism.gpus_per_node=8",
            "engine.api_key=sekret",
        ],
    )
    plan = plan_instance(s, host="127.0.0.1", port=4321, dist_init_addr="127.0.0.1:5000")
    for rank in plan.ranks:
        assert rank.argv[1:3] == ["-m", "serving.engines.simulator"]
        a = parse_args(rank.argv[3:])
        assert (a.preset, a.gpu, a.tp, a.port, a.host) == (preset, GpuType(gpu), tp, 4321, "127.0.0.1")
        assert a.served_model_name == preset
        assert a.api_key == "sekret"
        assert a.speculative_algorithm == "NEXTN"
        assert a.enable_metrics
        assert (a.nnodes, a.node_rank) == (nodes, rank.rank)


def test_sglang_extra_args_from_the_option_table_are_accepted() -> None:
    a = parse_args(["--sim-preset", "qwen3.6-27b", "--enable-mixed-chunk", "--log-level", "info"])
    assert a.preset == "qwen3.6-27b"


def test_unknown_option_is_rejected_like_sglang(capsys: pytest.CaptureFixture[str]) -> None:
    # No table passed: the one shipped with the package (strict), not the lenient fallback.
    with pytest.raises(SystemExit) as e:
        parse_args(["--cuda-graph-max-bs", "8"])
    assert e.value.code == 2
    assert "--cuda-graph-max-bs" in capsys.readouterr().err


def test_without_the_table_unknown_pairs_are_kept(tmp_path: Path) -> None:
    a = parse_args(["--port", "1", "--some-flag", "x", "--bare"], tmp_path / "missing.json")
    assert a.port == 1
    assert a.extra == {"some_flag": "x", "bare": True}


def test_sim_knobs() -> None:
    a = parse_args(["--sim-zero-delay", "--sim-crash-after-tokens", "5", "--sim-fixed-tpot-s", "0.01"])
    assert a.zero_delay
    assert a.crash_after_tokens == 5
    assert a.fixed_tpot_s == 0.01


def test_multi_node_needs_a_dist_addr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--nnodes", "2", "--node-rank", "1"])
    assert "--dist-init-addr" in capsys.readouterr().err


def test_every_simulator_setting_is_a_flag_and_survives_the_launch_plan() -> None:
    from serving.config import load_settings
    from serving.config.settings import SimulatorSettings
    from serving.engines.simulator.plan import sim_args

    knobs = {
        "time_scale": 0.5,
        "fixed_tpot_s": 0.02,
        "crash_after_tokens": 7,
        "fail_health": True,
        "hang_scheduler_after_s": 3.0,
        "health_timeout_s": 2.5,
        "new_token_ratio": 0.4,
    }
    s = load_settings(
        overrides={"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "simulator", "simulator": knobs}}, env={}
    )
    a = parse_args(sim_args(s), Path("/nonexistent.json"))
    for name in SimulatorSettings.model_fields:  # one flag per field, no list kept by hand
        assert getattr(a, name) == getattr(s.engine.simulator, name), name


def test_sim_knob_bounds_come_from_the_settings_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--sim-time-scale", "0"], Path("/nonexistent.json"))
    assert "--sim-time-scale" in capsys.readouterr().err
