"""vLLM engine module facts measured against the real vLLM 0.32 CPU build (tests/vllm runs it):
the two program forms and the load read from vLLM's /metrics exposition."""

from __future__ import annotations

import pytest

from serving.config import load_settings
from serving.engines import get_engine, plan_instance

pytestmark = pytest.mark.unit

# Lines from vLLM 0.32.0's /metrics (tests/vllm), abridged. `_by_reason` must not be counted twice.
METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen3-tiny"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen3-tiny"} 2.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="qwen3-tiny",reason="capacity"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="qwen3-tiny",reason="deferred"} 0.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="qwen3-tiny"} 1.0
"""


def test_load_is_running_plus_waiting_without_the_by_reason_split():
    load = get_engine("vllm").parse_load(METRICS)
    assert (load.running, load.queued) == (3.0, 2.0)


def settings(**engine):
    return load_settings(
        overrides={"model": {"preset": "qwen3-tiny", "path": "/m"}, "engine": {"kind": "vllm", **engine},
                   "parallelism": {"gpu_type": "cpu"}, "context_length": 2048},
        env={},
    )  # fmt: skip


def test_default_program_is_vllm_serve_with_a_positional_model():
    argv = plan_instance(settings(), host="127.0.0.1", port=1).ranks[0].argv
    assert argv[:3] == ["vllm", "serve", "/m"]


@pytest.mark.parametrize("python", ["/venv/bin/python", "python3", "/opt/py/bin/python3.11"])
def test_a_python_binary_runs_the_api_server_module_with_an_explicit_model(python):
    # the CPU build's `vllm` script is broken, and the module ignores a positional model
    argv = plan_instance(settings(binary=python), host="127.0.0.1", port=1).ranks[0].argv
    assert argv[:5] == [python, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    assert "serve" not in argv


def test_the_tiny_preset_carries_the_production_parsers():
    argv = plan_instance(settings(), host="127.0.0.1", port=1).ranks[0].argv
    joined = " ".join(argv)
    assert "--reasoning-parser qwen3" in joined
    assert "--enable-auto-tool-choice --tool-call-parser qwen3_coder" in joined
    assert "--mamba-ssm-cache-dtype" not in joined  # a plain Qwen3 model: no linear-attention state
