"""Every vLLM launch plan the project emits — each GPU preset × layout, the chart's vLLM
profile, and the CPU plan this lane runs — parses with the installed vLLM's own argument parser
(`make_arg_parser`, the one `vllm serve` builds) and passes its post-parse validation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.config import load_settings
from serving.engines import plan_instance
from tests.conftest import ROOT
from tests.vllm.conftest import PYTHON, vllm_settings

pytestmark = pytest.mark.vllm

GPU_PRESETS = ["qwen3.6-27b", "qwen3.6-27b-fp8", "qwen3.6-35b-a3b", "qwen3.6-35b-a3b-fp8"]
LAYOUTS: dict[str, dict[str, Any]] = {
    "1x8-h100-tp8": {"parallelism": {"tp": 8, "gpus_per_node": 8, "gpu_type": "h100"}},
    "1x-h200-tp1": {"parallelism": {"tp": 1, "gpus_per_node": 1, "gpu_type": "h200"}},
    "2x8-h100-tp8-pp2": {
        "parallelism": {"tp": 8, "pp": 2, "nodes": 2, "gpus_per_node": 8, "gpu_type": "h100"},
        "speculative": {"enabled": False},
    },
    "1x8-h100-dp2-tp4": {"parallelism": {"tp": 4, "dp": 2, "gpus_per_node": 8, "gpu_type": "h100"}},
}


def engine_args(argv: list[str]) -> list[str]:
    """The argv after the program words."""
    return argv[3:] if argv[1] == "-m" else argv[2:]


def plans() -> list[dict[str, Any]]:
    cases = []
    for preset in GPU_PRESETS:
        for name, layout in LAYOUTS.items():
            s = load_settings(overrides={"model": {"preset": preset}, "engine": {"kind": "vllm"}, **layout}, env={})
            plan = plan_instance(s, host="0.0.0.0", port=30000, dist_init_addr="10.1.2.3:5757")
            for r in plan.ranks:
                cases.append({"name": f"{preset}/{name}/rank{r.rank}", "args": engine_args(r.argv)})
    chart = ROOT / "helm" / "qwen-serve"
    for profile in sorted(chart.glob("values-vllm-*.yaml")):
        block = yaml.safe_load(profile.read_text())["settings"]
        s = load_settings(overrides=block, env={})
        for r in plan_instance(s, host="0.0.0.0", port=30000, dist_init_addr="10.1.2.3:5757").ranks:
            cases.append({"name": f"{profile.name}/rank{r.rank}", "args": engine_args(r.argv)})
    cpu = plan_instance(vllm_settings(), host="127.0.0.1", port=30000)
    cases.append({"name": "cpu-tiny (this lane)", "args": engine_args(cpu.ranks[0].argv)})
    return cases


def test_every_vllm_plan_parses_with_the_installed_vllm(vllm_ready, tmp_path: Path):
    cases = plans()
    assert any("values-vllm-h100" in c["name"] for c in cases), "the chart's vLLM profile is missing"
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(cases))
    helper = Path(__file__).with_name("parse_with_vllm.py")
    done = subprocess.run(
        [str(PYTHON), str(helper), str(path)], check=False, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(verdicts) == len(cases)
    bad = [v for v in verdicts if not v["ok"]]
    assert not bad, json.dumps(bad, indent=1)
    by_name = {v["name"]: v for v in verdicts}
    assert by_name["qwen3.6-27b/1x8-h100-tp8/rank0"]["tp"] == 8
    assert by_name["cpu-tiny (this lane)"]["model"].endswith("qwen3-tiny")
