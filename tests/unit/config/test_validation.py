"""Every load-time validation rule refuses with a message that names the field."""

from __future__ import annotations

import pytest

from serving.config import ConfigError, load_settings, resolved_max_running

pytestmark = pytest.mark.unit

Q27 = {"model": {"preset": "qwen3.6-27b"}, "engine": {"kind": "sglang"}}


def load(**sections):
    merged = {**Q27, **sections}
    return load_settings(overrides=merged, env={})


def refusal(**sections) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(**sections)
    return info.value


def fields(err: ConfigError) -> set[str]:
    return {p.field for p in err.problems}


def test_defaults_are_the_local_embedded_engine():
    s = load_settings(env={})
    assert s.engine.kind.value == "llamacpp"
    assert s.model.preset == "smollm2-135m"
    assert str(s.model.path).endswith(".gguf")


def test_qwen_preset_fills_parsers_context_and_name():
    s = load(parallelism={"tp": 8})
    assert s.context_length == 262144
    assert s.reasoning.parser == "qwen3"
    assert s.tools.parser == "qwen3_coder"
    assert s.model.served_name == "qwen3.6-27b"
    assert s.speculative.enabled
    assert (s.speculative.num_steps, s.speculative.eagle_topk, s.speculative.num_draft_tokens) == (3, 1, 4)


@pytest.mark.parametrize("tp", [5, 7, 16])
def test_tp_must_divide_heads(tp):
    err = refusal(parallelism={"tp": tp, "gpus_per_node": 16})
    assert "parallelism.tp" in fields(err)
    assert "24 attention heads" in str(err)
    assert "1, 2, 3, 4, 6, 8, 12, 24" in str(err)


def test_ranks_must_fill_nodes_evenly():
    err = refusal(parallelism={"tp": 3, "nodes": 2})
    assert "parallelism.nodes" in fields(err)


def test_pipeline_parallel_excludes_mtp():
    err = refusal(parallelism={"tp": 8, "pp": 2, "nodes": 2})
    assert "speculative.enabled" in fields(err)
    ok = load(parallelism={"tp": 8, "pp": 2, "nodes": 2}, speculative={"enabled": False})
    assert ok.parallelism.pp == 2


def test_dp_across_nodes_refused():
    err = refusal(parallelism={"tp": 4, "dp": 2, "nodes": 2}, speculative={"enabled": False})
    assert "parallelism.dp" in fields(err)


def test_served_name_without_colon():
    err = refusal(parallelism={"tp": 8}, model={"preset": "qwen3.6-27b", "served_name": "qwen:27b"})
    assert "model.served_name" in fields(err)
    assert "qwen-27b" in str(err)


def test_context_above_model_maximum_refused_unless_allowed():
    err = refusal(parallelism={"tp": 8}, context_length=524288)
    assert "context_length" in fields(err)
    allowed = load(
        parallelism={"tp": 8},
        context_length=300000,
        model={"preset": "qwen3.6-27b", "allow_long_context": True},
        memory={"kv_tokens_per_request": 65536},
    )
    assert allowed.context_length == 300000


def test_gpus_must_exist():
    err = refusal(parallelism={"tp": 8, "gpus_per_node": 4})
    assert "parallelism.gpus_per_node" in fields(err) or "parallelism.tp" in fields(err)
    assert "4" in str(err)


def test_memory_fit_refuses_27b_bf16_tp1_h100_full_context_48_running():
    # Full-context reservation is the opt-in since issue 15.1 (the default admits as SGLang's pools do).
    err = refusal(
        parallelism={"tp": 1, "gpu_type": "h100"}, memory={"max_running_requests": 48, "reserve_full_context": True}
    )
    assert fields(err) == {"memory.max_running_requests"}
    text = str(err)
    assert "GiB" in text
    assert "Would fit" in text
    assert "kv_tokens_per_request" in text


def test_memory_fit_suggests_a_larger_tp_when_one_fits():
    err = refusal(
        parallelism={"tp": 2, "gpu_type": "h200"}, memory={"max_running_requests": 16, "reserve_full_context": True}
    )
    assert "parallelism.tp=" in str(err)


def test_default_max_running_is_the_most_that_fits():
    s = load(parallelism={"tp": 1, "gpu_type": "h200"}, memory={"kv_tokens_per_request": 16384})
    n = resolved_max_running(s)
    assert n > 16
    # one more request than the computed maximum must be refused
    err = refusal(
        parallelism={"tp": 1, "gpu_type": "h200"},
        memory={"kv_tokens_per_request": 16384, "max_running_requests": n + 1},
    )
    assert "memory.max_running_requests" in fields(err)


def test_bf16_ssm_state_doubles_concurrency_over_fp32():
    from serving.config import GpuType, get_preset
    from serving.config.memory import memory_fit

    def most(dtype: str) -> int:
        fit = memory_fit(
            get_preset("qwen3.6-27b"),
            gpu_type=GpuType.H200,
            tp=1,
            pp=1,
            mem_fraction=0.88,
            context_length=262144,
            running=None,
            kv_tokens_per_request=16,  # state-bound, as in qwen36.md's concurrency note
            ssm_dtype=dtype,
        )
        return fit.max_running

    # State-bound: running = state slots ÷ slots per request, and bf16 halves a slot; the ratio is 2
    # up to rounding (it was just under 2 when every request also counted its KV, before issue 15.1).
    assert most("bfloat16") / most("float32") == pytest.approx(2.0, rel=0.05)


def test_speculative_mtp_name_refused_with_hint():
    err = refusal(parallelism={"tp": 8}, speculative={"algorithm": "MTP"})
    assert "speculative.algorithm" in fields(err)
    assert "NEXTN" in str(err)


def test_autoscaling_min_above_max():
    err = refusal(parallelism={"tp": 8}, autoscaling={"min_replicas": 3, "max_replicas": 2})
    assert "autoscaling.min_replicas" in fields(err)


def test_llamacpp_needs_gguf_and_single_process():
    err = load_settings(overrides={"parallelism": {"tp": 2}}, env={}, check=False)
    from serving.config.validation import problems

    assert "parallelism.tp" in {p.field for p in problems(err)}
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"model": {"preset": "qwen3.6-27b"}}, env={})
    assert "model.path" in fields(info.value)


def test_gguf_preset_refused_on_gpu_engines():
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"engine": {"kind": "sglang"}}, env={})
    assert "model.preset" in fields(info.value)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"model": {"preset": "qwen9"}}, env={})
    assert "model.preset" in fields(info.value)
    assert "qwen3.6-27b" in str(info.value)


def test_every_problem_is_reported_at_once():
    err = refusal(parallelism={"tp": 16, "gpus_per_node": 16}, model={"preset": "qwen3.6-27b", "served_name": "a:b"})
    assert {"parallelism.tp", "model.served_name"} <= fields(err)


def test_default_max_running_follows_sglang_pools_not_a_full_context_reservation():
    from serving.config.validation import settings_fit

    h200 = {"tp": 1, "gpu_type": "h200"}
    slots_only = load(parallelism=h200, memory={"kv_share_tokens": 0})
    fit = settings_fit(slots_only, running=None)
    # with no pool share asked: bounded by the state slots (5 per running request), not context × requests
    assert resolved_max_running(slots_only) == fit.cap.state_slots // fit.cap.slots_per_request == fit.cap.max_running
    full = resolved_max_running(load(parallelism=h200, memory={"reserve_full_context": True}))
    assert full * 262144 <= fit.cap.kv_pool_tokens + 262144  # the opt-in reserves the whole context
    assert resolved_max_running(load(parallelism=h200)) > 10 * full


def test_default_max_running_leaves_each_running_request_its_share_of_the_kv_pool():
    from serving.config.validation import settings_fit

    s = load(parallelism={"tp": 1, "gpu_type": "h200"})
    share = s.memory.kv_share_tokens
    n = resolved_max_running(s)
    bound = settings_fit(s, running=None).cap.max_running
    assert 1 <= n < bound  # the state slots alone would admit more than the pool can share out
    # the pool shrinks as running slots grow (their speculative states): n keeps the share, n + 1 not
    assert settings_fit(s, running=n).cap.kv_pool_tokens >= n * share
    assert settings_fit(s, running=n + 1).cap.kv_pool_tokens < (n + 1) * share
    half = load(parallelism={"tp": 1, "gpu_type": "h200"}, memory={"kv_share_tokens": share // 2})
    smaller = resolved_max_running(half)
    assert n < smaller <= bound


def test_explicit_running_above_the_state_slots_is_refused_with_what_each_choice_costs():
    from serving.config.validation import settings_fit

    bound = settings_fit(load(parallelism={"tp": 1, "gpu_type": "h100"}), running=None).cap.state_bound
    assert 1 < bound < 48
    err = refusal(parallelism={"tp": 1, "gpu_type": "h100"}, memory={"max_running_requests": 48})
    text = str(err)
    assert fields(err) == {"memory.max_running_requests"}
    assert "state pool" in text
    assert "KV pool" in text
    assert f"≤ {bound} running" in text
    assert f"memory.max_running_requests ≤ {bound}" in text
    assert "parallelism.tp=2" in text


def test_full_context_reservation_that_cannot_hold_one_request_is_refused_naming_the_default():
    err = refusal(parallelism={"tp": 1, "gpu_type": "h100"}, memory={"reserve_full_context": True})
    text = str(err)
    assert "0 can run" in text
    assert "reserve_full_context=false" in text
    assert "retraction possible" in text
