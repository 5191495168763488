"""Every preset × engine × layout plan is checked against the engines' pinned option tables
(SGLang's shipped with the package, generated from its wheel; vLLM's in tests/data/reference/):
each option exists, choices are legal, numbers parse, and nothing deprecated or removed is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.config import ConfigError, load_settings
from serving.engines import plan_instance
from serving.engines.reference import SGLANG_FLAGS

pytestmark = pytest.mark.unit

PRESETS = ["qwen3.6-27b", "qwen3.6-27b-fp8", "qwen3.6-35b-a3b", "qwen3.6-35b-a3b-fp8"]
# name → (parallelism, speculative overrides) for each model family; 27B has 24 heads (TP=16 is
# refused), so its honest two-node layout is TP=8 × PP=2 (which excludes MTP).
LAYOUTS = {
    "1x8-h100-tp8": lambda preset: {"parallelism": {"tp": 8, "gpus_per_node": 8, "gpu_type": "h100"}},
    "2x8-h100": lambda preset: (
        {"parallelism": {"tp": 16, "nodes": 2, "gpus_per_node": 8, "gpu_type": "h100"}}
        if "35b" in preset
        else {
            "parallelism": {"tp": 8, "pp": 2, "nodes": 2, "gpus_per_node": 8, "gpu_type": "h100"},
            "speculative": {"enabled": False},
        }
    ),
    "1x-h200-tp1": lambda preset: {"parallelism": {"tp": 1, "gpus_per_node": 1, "gpu_type": "h200"}},
}
DEPRECATED = {"--cuda-graph-max-bs", "--enable-dp-attention", "--mamba-scheduler-strategy"}
# where the engine's own argv starts (after the program words and the vLLM positional model)
PREFIX = {"sglang": 3, "simulator": 3, "vllm": 3}
# SGLANG_FLAGS is absolute, so reference_dir / SGLANG_FLAGS is SGLANG_FLAGS itself.
TABLES = {"sglang": SGLANG_FLAGS, "simulator": SGLANG_FLAGS}
TABLES["vllm"] = Path("vllm-serve-0.33.0.flags.json")


def option_table(reference_dir: Path, engine: str) -> dict[str, dict]:
    data = json.loads((reference_dir / TABLES[engine]).read_text())
    return {name: opt for opt in data["options"] for name in opt["opts"]}


def takes_value(opt: dict) -> bool:
    return not any(s in opt["action"] for s in ("StoreTrue", "StoreFalse", "EnableDisable", "Count"))


def check_value(flag: str, opt: dict, value: str) -> None:
    kind = opt["type"]
    if kind == "int":
        int(value)
    elif kind in ("float",):
        float(value)
    elif kind.startswith("human_readable_int"):
        assert value == "auto" or int(value) >= 0, f"{flag} {value}"
    if opt["choices"]:
        assert value in opt["choices"], f"{flag}={value!r} not in {opt['choices']}"
    if flag == "--speculative-config":
        json.loads(value)


def check_argv(argv: list[str], table: dict[str, dict]) -> list[str]:
    seen = []
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("-"), f"stray positional {flag!r}"
        assert flag not in DEPRECATED, f"removed/deprecated option {flag}"
        opt = table.get(flag)
        assert opt is not None, f"{flag} is not an option of the engine"
        assert "Deprecated" not in opt["action"], f"{flag} is deprecated"
        if takes_value(opt):
            check_value(flag, opt, argv[i + 1])
            i += 2
        else:
            i += 1
        seen.append(flag)
    return seen


def sim_free(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--sim-"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            i += 2 if has_value else 1
            continue
        out.append(argv[i])
        i += 1
    return out


CASES = [(p, e, lay) for p in PRESETS for e in ("sglang", "vllm", "simulator") for lay in LAYOUTS]


@pytest.mark.parametrize(("preset", "engine", "layout"), CASES, ids=["-".join(c) for c in CASES])
def test_plan_matches_option_table(reference_dir, preset, engine, layout):
    overrides = {"model": {"preset": preset}, "engine": {"kind": engine}, **LAYOUTS[layout](preset)}
    s = load_settings(overrides=overrides, env={})
    plan = plan_instance(s, host="0.0.0.0", port=30000, dist_init_addr="10.1.2.3:5757")
    table = option_table(reference_dir, engine)
    assert len(plan.ranks) == s.parallelism.nodes
    for rank in plan.ranks:
        argv = sim_free(rank.argv[PREFIX[engine] :])
        seen = check_argv(argv, table)
        assert len(seen) == len(set(seen)), f"an option is repeated: {seen}"
        if engine in ("sglang", "simulator"):
            for flag in (
                "--tp-size",
                "--context-length",
                "--reasoning-parser",
                "--tool-call-parser",
                "--max-running-requests",
                "--mamba-radix-cache-strategy",
                "--mamba-ssm-dtype",
                "--enable-metrics",
                "--enable-cache-report",
                "--served-model-name",
                "--host",
                "--port",
                "--watchdog-timeout",
            ):
                assert flag in seen, flag
            if s.speculative.enabled:
                i = argv.index("--speculative-algorithm")
                assert argv[i : i + 8] == [
                    "--speculative-algorithm",
                    "NEXTN",
                    "--speculative-num-steps",
                    "3",
                    "--speculative-eagle-topk",
                    "1",
                    "--speculative-num-draft-tokens",
                    "4",
                ]
            if s.parallelism.nodes > 1:
                assert argv[argv.index("--node-rank") + 1] == str(rank.rank)
                assert argv[argv.index("--dist-init-addr") + 1] == "10.1.2.3:5757"
            if s.parallelism.pp > 1:
                assert "--disable-overlap-schedule" in seen
        else:
            assert rank.argv[:3] == ["vllm", "serve", s.model.path]
            assert "--enable-auto-tool-choice" in seen
            if rank.rank > 0:
                assert "--headless" in seen


def test_gguf_preset_is_refused_on_gpu_engines():
    with pytest.raises(ConfigError):
        load_settings(overrides={"model": {"preset": "smollm2-135m"}, "engine": {"kind": "sglang"}}, env={})


def test_engine_api_key_never_printed_and_vllm_gets_it_by_env():
    s = load_settings(
        overrides={
            "model": {"preset": "qwen3.6-27b"},
            "engine": {"kind": "vllm", "api_key": "zzz-secret"},
            "parallelism": {"tp": 8},
        },
        env={},
    )
    plan = plan_instance(s)
    assert "zzz-secret" not in " ".join(plan.ranks[0].argv)
    assert plan.ranks[0].env["VLLM_API_KEY"] == "zzz-secret"
    assert "zzz-secret" not in plan.to_json()
    assert "zzz-secret" not in plan.ranks[0].shell()


def test_sglang_api_key_is_redacted_in_printed_plans():
    s = load_settings(
        overrides={
            "model": {"preset": "qwen3.6-27b"},
            "engine": {"kind": "sglang", "api_key": "zzz-secret"},
            "parallelism": {"tp": 8},
        },
        env={},
    )
    plan = plan_instance(s)
    assert "zzz-secret" in plan.ranks[0].argv  # SGLang takes it on argv only (documented in notes)
    assert "zzz-secret" not in plan.to_json()
    assert "zzz-secret" not in plan.ranks[0].shell()
    assert any("argv" in n for n in plan.notes)


def test_multinode_plan_needs_dist_init_addr():
    s = load_settings(
        overrides={
            "model": {"preset": "qwen3.6-35b-a3b"},
            "engine": {"kind": "sglang"},
            "parallelism": {"tp": 16, "nodes": 2},
        },
        env={},
    )
    with pytest.raises(ValueError, match="dist_init_addr"):
        plan_instance(s)


@pytest.mark.parametrize(
    "argv",
    [
        ["--cuda-graph-max-bs", "8"],
        ["--enable-dp-attention"],
        ["--mamba-scheduler-strategy", "extra_buffer"],
        ["--mamba-ssm-dtype", "fp7"],
        ["--tp-size", "eight"],
        ["--no-such-option", "1"],
    ],
)
def test_the_checker_itself_rejects_bad_argv(reference_dir, argv):
    with pytest.raises((AssertionError, ValueError)):
        check_argv(argv, option_table(reference_dir, "sglang"))
