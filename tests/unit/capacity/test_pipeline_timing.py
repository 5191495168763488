"""Pipeline-parallel timing: stages run one after another, microbatches fill them, hops cost time."""

from __future__ import annotations

import pytest

from serving.capacity.pipeline import PipelineTiming
from serving.capacity.timing import Deployment, TimingModel

pytestmark = pytest.mark.unit

CTX = 2000  # context tokens per running request


def d(tp: int, pp: int = 1, **kw: object) -> Deployment:
    return Deployment.of("qwen3.6-27b", tp=tp, pp=pp, **kw)


def test_one_stage_is_exactly_the_tp_model() -> None:
    for spec in (None, 4):
        tp_only, pipe = TimingModel(d(4, draft_tokens=spec)), PipelineTiming(d(4, draft_tokens=spec))
        for batch in (1, 7, 64):
            assert pipe.decode_step_s(batch, batch * CTX) == tp_only.decode_step_s(batch, batch * CTX)
            assert pipe.bubble(batch, batch * CTX) == 0.0
        assert pipe.prefill_s(3000) == tp_only.prefill_s(3000)
        assert pipe.prefill_busy_s(3000) == tp_only.prefill_s(3000)
        assert pipe.tokens_per_step == tp_only.tokens_per_step


def test_stages_do_not_shorten_a_token_the_way_tensor_parallel_does() -> None:
    one_group = TimingModel(d(4))
    pipe, tp8 = PipelineTiming(d(4, pp=2)), TimingModel(d(8))
    # A prompt and a lone request's token cross every stage in turn: no faster than one TP group.
    assert pipe.prefill_s(4000) > one_group.prefill_s(4000)
    assert pipe.decode_step_s(1, CTX) > one_group.forward_s(1, CTX)
    # The same 8 GPUs as TP=8 split every layer instead: a token comes sooner.
    assert tp8.decode_step_s(1, CTX) < pipe.decode_step_s(1, CTX)
    # But each stage is busy for only its share of a prefill: twice the prompts per second.
    assert pipe.prefill_busy_s(4000) == pytest.approx(one_group.prefill_s(4000) / 2)


def test_p_stages_run_p_microbatches_in_the_time_one_group_runs_one() -> None:
    one_group, pipe = TimingModel(d(2)), PipelineTiming(d(2, pp=2))
    b = 32
    round_ = pipe.decode_step_s(2 * b, 2 * b * CTX)  # two microbatches of b
    hops = round_ - one_group.forward_s(b, b * CTX)
    assert hops > 0  # activations and sampled tokens move between the stages
    assert hops < 0.05 * round_  # …and cost little next to the passes inside a node
    assert pipe.bubble(2 * b, 2 * b * CTX) < 0.05


def test_fewer_running_requests_than_stages_leave_a_bubble() -> None:
    pipe = PipelineTiming(d(2, pp=4), nodes=2)
    assert pipe.microbatches(1) == 1
    assert pipe.bubble(1, CTX) > 0.74  # one microbatch: three of four stages wait
    assert pipe.bubble(2, 2 * CTX) > 0.49
    assert pipe.bubble(64, 64 * CTX) < 0.05


def test_a_hop_across_nodes_costs_more_than_one_inside_a_node() -> None:
    inside, across = PipelineTiming(d(4, pp=2), nodes=1), PipelineTiming(d(4, pp=2), nodes=2)
    assert across.hop_s(4096, cross_node=True) > inside.hop_s(4096, cross_node=False)
    assert across.decode_step_s(16, 16 * CTX) > inside.decode_step_s(16, 16 * CTX)
    assert across.prefill_s(4096) > inside.prefill_s(4096)
    # With TP each rank sends its share and the next stage all-gathers: bigger TP, less over the NIC.
    wide = PipelineTiming(d(8, pp=2), nodes=2)
    assert wide.hop_s(1 << 16, cross_node=True) < across.hop_s(1 << 16, cross_node=True)


def test_layouts_the_model_does_not_cover_are_refused() -> None:
    with pytest.raises(ValueError, match="speculative"):
        PipelineTiming(d(4, pp=2, draft_tokens=4))
    with pytest.raises(ValueError, match="TP group across nodes"):
        PipelineTiming(d(12, pp=1), nodes=2)
