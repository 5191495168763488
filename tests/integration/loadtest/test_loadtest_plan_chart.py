"""`loadtest plan` end to end: the installed CLI writes values, the real Helm SDK renders them into a
RayService that runs the chosen engine and layout, and every object validates offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "helm"))
from helm_support import CHART, deep_merge, render, validate_object  # noqa: E402  (found on the path set above)

from serving.config import load_settings  # noqa: E402

pytestmark = pytest.mark.integration

LOADTEST = shutil.which("loadtest", path=str(Path(sys.executable).parent)) or "loadtest"


def plan(tmp_path: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `loadtest plan` as a user does; the values it wrote, and its options as JSON."""
    out = tmp_path / "values.yaml"
    r = subprocess.run([LOADTEST, "plan", *args, "--format", "json", "--values-out", str(out)],
                       capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(out.read_text()), json.loads(r.stdout)


def rayservice(values: dict[str, Any], reference_dir: Path) -> dict[str, Any]:
    docs = render(values)
    for doc in docs:
        validate_object(doc, reference_dir)
    return next(d for d in docs if d["kind"] == "RayService")


# long prompts on H100 with MTP off: only pipelines over two nodes make the cut
PP_TWO_NODES = ["--rps", "0.5", "--scenario", "long_context", "--slo-ttft", "30", "--gpus", "h100", "--tps", "8",
                "--pps", "2", "--precisions", "bf16", "--mtp", "off"]  # fmt: skip
VLLM = ["--rps", "8", "--engines", "vllm", "--gpus", "h200", "--tps", "1,2", "--pps", "1"]


@pytest.mark.parametrize(("name", "args"), [("pp-two-nodes", PP_TWO_NODES), ("vllm", VLLM)])
def test_plan_values_render_into_a_cluster_running_the_chosen_layout(
    name: str, args: list[str], tmp_path: Path, reference_dir: Path
) -> None:
    values, options = plan(tmp_path, *args)
    best = options[0]
    assert best["feasible"]
    assert best["usd_per_million_input"] > 0
    assert best["usd_per_million_output"] > 0
    c = best["candidate"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(deep_merge(defaults, values), json.loads((CHART / "values.schema.json").read_text()))

    ray = rayservice(values, reference_dir)
    group = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    # one pod per node of a replica, each with its share of tp × pp GPUs, as many replicas as planned
    assert group.get("numOfHosts", 1) == c["nodes"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == c["tp"] * c["pp"] // c["nodes"]
    assert (group["minReplicas"], group["maxReplicas"]) == (best["replicas"], best["replicas"])
    settings = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"][0]["args"]["settings"]
    s = load_settings(overrides=settings, env={})
    assert s.engine.kind.value == c["engine"]
    assert (s.parallelism.tp, s.parallelism.pp, s.parallelism.nodes) == (c["tp"], c["pp"], c["nodes"])
    assert s.speculative.enabled == c["mtp"]
    if name == "pp-two-nodes":
        assert (c["pp"], c["nodes"]) == (2, 2)
    else:
        assert c["engine"] == "vllm"
        assert container["image"].endswith("-vllm")  # the image of the chart's vLLM profile
