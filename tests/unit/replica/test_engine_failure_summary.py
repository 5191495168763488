"""An engine failure reads as: kind and rank, exit status with the signal's name, the log's last
lines and path, and a hint; a replica that can never be placed says what is missing and the fix."""

from __future__ import annotations

import pytest

from serving.config import load_settings
from serving.local import cut_failure, local_cluster_resources
from serving.replica.failure import EngineFailure, exit_status, hint_for
from serving.replica.instance import FAILURE_MARK
from serving.replica.placement import unschedulable

pytestmark = pytest.mark.unit


def test_a_signal_exit_is_named_with_its_description():
    assert exit_status(-4) == "killed by SIGILL (illegal instruction)"
    assert exit_status(132) == "exited with code 132 (SIGILL (illegal instruction))"  # as a shell reports it
    assert exit_status(3) == "exited with code 3"
    assert exit_status(None) == "still running"


def test_known_exits_carry_a_hint_and_others_none():
    assert "make llama-server" in (hint_for(-4) or "")
    assert "OOM" in (hint_for(-9) or "")
    assert "engine.binary" in (hint_for(127) or "")
    assert hint_for(3) is None


def test_the_summary_keeps_the_last_20_lines_and_names_the_log():
    tail = [f"line {i}" for i in range(40)]
    text = EngineFailure("llamacpp", 0, "exited during start-up", -4, tail, "/tmp/x-rank0.log").render()
    first, *_ = text.splitlines()
    assert first == "engine llamacpp rank 0 exited during start-up: killed by SIGILL (illegal instruction)"
    assert "last 20 lines of its log (/tmp/x-rank0.log):" in text
    assert "| line 39" in text
    assert "| line 20" in text
    assert "| line 19" not in text
    assert "hint: " in text


def test_the_summary_is_cut_out_of_a_serve_status_message():
    message = (
        f"A replica failed to start. Error:\nTraceback …\nEngineStartError: {FAILURE_MARK}\nthe why\n{FAILURE_MARK}\n"
    )
    assert cut_failure(message) == "the why"
    assert cut_failure("A replica failed to start with exception.") is None


def _settings(**sets: object):
    return load_settings(overrides=sets, env={})


def test_a_gpu_replica_on_a_cpu_only_cluster_names_the_missing_gpu_and_the_fix():
    s = _settings(engine={"kind": "sglang"}, model={"preset": "qwen3.6-27b"}, parallelism={"gpu_type": "h200"})
    (problem,) = unschedulable(s, [{"CPU": 2.0}], extra_cpus=0.5)
    assert "GPU 1 (a node has at most 0)" in problem
    assert "engine.kind=simulator" in problem


def test_a_multi_node_replica_on_one_node_names_parallelism_nodes():
    s = _settings(
        engine={"kind": "simulator"},
        model={"preset": "qwen3.6-27b"},
        parallelism={"tp": 8, "pp": 2, "nodes": 2, "gpu_type": "h100"},
        speculative={"enabled": False},
    )
    (problem,) = unschedulable(s, [{"CPU": 64.0, "GPU": 16.0}])
    assert problem.startswith("parallelism.nodes:")


def test_too_few_cpus_for_replica_and_gateway_names_cpus_per_rank():
    s = _settings(engine={"kind": "llamacpp"}, parallelism={"cpus_per_rank": 2})
    (problem,) = unschedulable(s, [{"CPU": 2.0}], extra_cpus=0.5)
    assert problem.startswith("parallelism.cpus_per_rank:")
    assert unschedulable(s, [{"CPU": 4.0}], extra_cpus=0.5) == []


def test_the_local_cluster_declares_the_gpus_simulated_replicas_reserve():
    s = _settings(engine={"kind": "simulator"}, model={"preset": "qwen3.6-27b"},
                  parallelism={"tp": 2, "gpu_type": "h200"}, autoscaling={"max_replicas": 3})  # fmt: skip
    res = local_cluster_resources(s)
    assert res["num_gpus"] == 2 * 3
    assert res["num_cpus"] >= 8 * 3
    assert unschedulable(s, [{"CPU": float(res["num_cpus"]), "GPU": float(res["num_gpus"])}], extra_cpus=0.5) == []
    assert local_cluster_resources(_settings(engine={"kind": "llamacpp"})) == {}
