"""Timing-model arithmetic, the batch scheduler and the prefix cache (pure, virtual time)."""

from __future__ import annotations

import pytest

from serving.capacity.timing import Deployment, TimingModel
from serving.config.hardware import GpuType
from serving.engines.simulator import text as T
from serving.engines.simulator.prefix_cache import PrefixCache
from serving.engines.simulator.scheduler import Batch, BatchScheduler, SimRequest

pytestmark = pytest.mark.unit


def model(preset: str = "qwen3.6-27b", **kw: object) -> TimingModel:
    return TimingModel(Deployment.of(preset, gpu=GpuType.H200, **kw))


def test_decode_is_memory_bound_at_batch_1_and_compute_bound_at_large_batch() -> None:
    m = model()
    assert m.memory_bound(1, 8192)
    assert not m.memory_bound(4096, 4096 * 64)
    # At batch 1 the step is about weights ÷ effective bandwidth.
    weights_s = m.weights_total / m.bw
    assert weights_s <= m.decode_step_s(1, 8192) < 1.2 * weights_s


def test_step_grows_with_batch_and_context() -> None:
    m = model()
    assert m.decode_step_s(16, 16 * 8192) > m.decode_step_s(1, 8192)
    assert m.decode_step_s(8, 8 * 100_000) > m.decode_step_s(8, 8 * 1000)


def test_mtp_speeds_up_batch_1() -> None:
    plain, mtp = model(), model(draft_tokens=4, accept_length=2.8)
    per_token_plain = plain.decode_step_s(1, 8192) / plain.tokens_per_step
    per_token_mtp = mtp.decode_step_s(1, 8192) / mtp.tokens_per_step
    assert mtp.tokens_per_step == 2.8
    assert per_token_mtp < per_token_plain / 1.8


def test_accept_length_is_capped_by_draft_tokens() -> None:
    assert model(draft_tokens=2, accept_length=3.5).tokens_per_step == 2.0


def test_fp8_weights_halve_the_memory_bound_step() -> None:
    bf16, fp8 = model(), model("qwen3.6-27b-fp8")
    assert fp8.decode_step_s(1, 1024) < 0.7 * bf16.decode_step_s(1, 1024)


def test_moe_touches_fewer_weights_at_small_batch() -> None:
    m = model("qwen3.6-35b-a3b")
    assert m.weight_bytes_touched(1) < 0.2 * m.weights_total
    assert m.weight_bytes_touched(4096) == pytest.approx(m.weights_total, rel=0.01)


def test_tp_divides_weights_with_some_overhead() -> None:
    one, two = model(), model(tp=2)
    assert one.decode_step_s(1, 1024) / 2 < two.decode_step_s(1, 1024) < one.decode_step_s(1, 1024)


def test_capacity_from_memory() -> None:
    big = TimingModel(Deployment.of("qwen3.6-27b", gpu=GpuType.H200, max_running=48))
    small = TimingModel(Deployment.of("qwen3.6-27b", gpu=GpuType.H100, max_running=48))
    # SGLang splits what the weights leave between the state pool and the KV pool (0.9 : 1), so the
    # pool grows with the room left: H200 ~62 GiB vs H100 ~18 GiB of room → ~4× the tokens. (Before
    # issue 14.5 every one of 48 slots took two fp32 states out of the H100's room first: >10×.)
    assert big.capacity().kv_pool_tokens > 3 * small.capacity().kv_pool_tokens
    assert small.capacity().kv_pool_tokens > 0
    # and the state pool bounds the running requests below the 48 asked on the H100
    assert small.capacity().max_running < 48 == big.capacity().requested


def _sched(m: TimingModel, *, pool: int, max_running: int = 64, cache: PrefixCache | None = None) -> BatchScheduler:
    return BatchScheduler(m, cache or PrefixCache(0), max_running=max_running, kv_pool_tokens=pool)


def test_capacity_limits_running_requests_and_the_rest_queue() -> None:
    s = _sched(model(), pool=3 * 1100, max_running=64)
    for _ in range(10):
        s.submit(SimRequest(1000, 100, 1100), 0.0)
    b = s.next_batch(0.0)
    assert b is not None
    assert b.kind == "prefill"
    assert len(s.running) == 3
    assert len(s.waiting) == 7


def test_max_running_limits_running_requests() -> None:
    s = _sched(model(), pool=10**9, max_running=2)
    for _ in range(5):
        s.submit(SimRequest(100, 10, 110), 0.0)
    s.next_batch(0.0)
    assert len(s.running) == 2
    assert len(s.waiting) == 3


def test_requests_finish_and_free_their_slots() -> None:
    s = _sched(model(draft_tokens=4, accept_length=2.0), pool=1100, max_running=4)
    a, b = SimRequest(1000, 5, 1100), SimRequest(1000, 5, 1100)
    s.submit(a, 0.0)
    s.submit(b, 0.0)
    now, released = 0.0, 0
    while (batch := s.next_batch(now)) is not None:
        now += batch.duration_s
        released += sum(k for _, k in s.complete(batch, now))
    assert a.state == b.state == "done"
    assert released == 10
    assert b.admitted_at is not None
    assert a.finished_at is not None
    assert b.admitted_at >= a.finished_at
    assert s.kv_used == 0
    assert s.total_context == 0


def test_prefix_cache_hit_shortens_prefill() -> None:
    cache = PrefixCache(100_000)
    s = _sched(model(), pool=10**6, cache=cache)
    text = T.render_chat([{"role": "system", "content": "x" * 20000}, {"role": "user", "content": "hi"}], None, True)
    pages = T.page_hashes(text)
    first = SimRequest(T.count_tokens(text), 1, T.count_tokens(text) + 1, pages=pages)
    s.submit(first, 0.0)
    b1 = s.next_batch(0.0)
    assert b1 is not None
    s.complete(b1, b1.duration_s)
    text2 = T.render_chat(
        [{"role": "system", "content": "x" * 20000}, {"role": "user", "content": "other"}], None, True
    )
    second = SimRequest(T.count_tokens(text2), 1, T.count_tokens(text2) + 1, pages=T.page_hashes(text2))
    s.submit(second, 1.0)
    b2 = s.next_batch(1.0)
    assert b2 is not None
    assert second.cached > 4000
    assert b2.duration_s < 0.2 * b1.duration_s
    assert cache.hits == 1
    assert cache.misses == 1
    assert 0 < cache.hit_rate < 1


def test_prefix_cache_evicts_least_recently_used() -> None:
    c = PrefixCache(2 * T.PAGE_TOKENS)
    c.insert([1, 2])
    c.insert([3])
    assert c.match([1, 2]) == 0
    assert c.match([3]) == T.PAGE_TOKENS


def test_tokenizer_approximation() -> None:
    assert T.count_tokens("abcd" * 10) == 10
    assert T.count_tokens("abcde") == 2
    assert T.count_tokens("") == 0


def test_output_plan_reasoning_stop_and_tool() -> None:
    out = T.plan_output(max_new=10, exact=True, seed=0, thinking=True, stop=[], tool=None, call_id="")
    assert out.n_tokens == 10
    assert out.reasoning_tokens == 5
    assert out.finish_reason == "length"
    words = T.filler(4, 3)
    cut = T.plan_output(max_new=20, exact=True, seed=3, thinking=False, stop=[words[2].strip()], tool=None, call_id="")
    assert cut.finish_reason == "stop"
    assert cut.matched_stop == words[2].strip()
    assert cut.n_tokens < 4
    tool = {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {"type": "integer"}}}}}
    call = T.plan_output(max_new=50, exact=False, seed=0, thinking=False, stop=[], tool=tool, call_id="c")
    assert call.finish_reason == "tool_calls"
    assert call.text(T.TOOL_ARGS) == '{"a": 1}'


def test_running_requests_are_bounded_by_state_slots_and_extra_buffer_costs_slots() -> None:
    with_extra = model(max_running=256, ssm_dtype="bfloat16").capacity()
    without = model(max_running=256, ssm_dtype="bfloat16", extra_buffer=False).capacity()
    assert with_extra.slots_per_request == 5
    assert without.slots_per_request == 3
    assert with_extra.max_running == with_extra.state_slots // 5 < 256
    assert without.max_running == without.state_slots // 3 > with_extra.max_running


def test_kv_pool_exhaustion_retracts_the_newest_request_and_it_finishes_later() -> None:
    # a pool for ~2.5 requests at full length, three admitted on the 0.7 estimate: one is retracted
    s = _sched(model(), pool=2500, max_running=8)
    reqs = [SimRequest(200, 800, 200 + 560) for _ in range(3)]
    for r in reqs:
        s.submit(r, 0.0)
    now, released = 0.0, 0
    while (batch := s.next_batch(now)) is not None:
        now += batch.duration_s
        released += sum(k for _, k in s.complete(batch, now))
    assert all(r.state == "done" for r in reqs)
    assert released == 3 * 800  # every token once: the retracted request resumes, not restarts
    assert s.retracted_total >= 1
    assert reqs[-1].retractions >= 1
    assert reqs[0].retractions == 0
    assert s.total_context == 0


def test_exact_reservation_never_retracts() -> None:
    s = _sched(model(), pool=2500, max_running=8)
    reqs = [SimRequest(200, 800, 1000) for _ in range(3)]
    for r in reqs:
        s.submit(r, 0.0)
    now = 0.0
    while (batch := s.next_batch(now)) is not None:
        now += batch.duration_s
        s.complete(batch, now)
    assert all(r.state == "done" for r in reqs)
    assert s.retracted_total == 0


@pytest.mark.parametrize("accept", [1.5, 2.8, 3.0, 3.7])
def test_zero_delay_steps_average_the_mtp_acceptance_length(accept: float) -> None:
    """With MTP the zero-delay simulator streams one event per verify step: steps that tile the
    tokens without gaps or overlaps and average the acceptance length."""
    from serving.engines.simulator.pacers import step_end

    n, i, steps = 1000, 0, []
    while i < n:
        j = step_end(i, accept)
        assert j > i
        assert step_end(j - 1, accept) == j  # every token inside a step ends it at the same place
        steps.append(j - i)
        i = j
    assert sum(steps) >= n
    assert sum(steps) / len(steps) == pytest.approx(accept, rel=0.01)
    assert set(steps) <= {int(accept), int(accept) + 1}


def _drain(s: BatchScheduler, now: float = 0.0) -> list[Batch]:
    out = []
    while (batch := s.next_batch(now)) is not None:
        now += batch.duration_s
        s.complete(batch, now)
        out.append(batch)
    return out


def test_a_long_prompt_is_prefilled_in_chunks_before_any_decode() -> None:
    m = model()
    s = BatchScheduler(m, PrefixCache(0), max_running=8, kv_pool_tokens=10**6, chunked_prefill_size=4096)
    long, short = SimRequest(10_000, 3, 10_003), SimRequest(1000, 3, 1003)
    s.submit(long, 0.0)
    s.submit(short, 0.0)
    batches = _drain(s)
    kinds = [(b.kind, b.tokens) for b in batches[:3]]
    # 4096 + 4096 of the long prompt, then its last 1808 with the short prompt filling the budget
    assert kinds == [("prefill", 4096), ("prefill", 4096), ("prefill", 1808 + 1000)]
    assert batches[3].kind == "decode"
    first_pass_end = batches[0].duration_s
    assert long.first_token_at is not None
    assert long.first_token_at > 2 * first_pass_end  # its first token comes from the last chunk
    # later chunks attend to the cache: the second 4096 costs more than the first
    assert batches[1].duration_s > batches[0].duration_s
    assert long.state == short.state == "done"


def test_unchunked_prefill_takes_whole_prompts() -> None:
    s = BatchScheduler(model(), PrefixCache(0), max_running=8, kv_pool_tokens=10**6, max_prefill_tokens=4096)
    s.submit(SimRequest(10_000, 1, 10_001), 0.0)
    b = s.next_batch(0.0)
    assert b is not None
    assert b.tokens == 10_000


def test_overlap_schedule_sees_a_new_request_one_pass_late_unless_idle() -> None:
    m = model()
    s = BatchScheduler(m, PrefixCache(0), max_running=8, kv_pool_tokens=10**6, overlap=True)
    s.submit(SimRequest(100, 50, 150), 0.0)
    first = s.next_batch(0.0)  # idle GPU: seen at once
    assert first is not None
    assert first.kind == "prefill"
    now = first.duration_s
    s.complete(first, now)
    d1 = s.next_batch(now)
    assert d1 is not None
    s.submit(SimRequest(100, 5, 105), now + 1e-6)  # arrives while d1 runs
    now += d1.duration_s
    s.complete(d1, now)
    d2 = s.next_batch(now)  # decided when d1 began: the arrival is not seen yet
    assert d2 is not None
    assert d2.kind == "decode"
    now += d2.duration_s
    s.complete(d2, now)
    third = s.next_batch(now)
    assert third is not None
    assert third.kind == "prefill"


def test_sampled_acceptance_varies_per_step_with_the_configured_mean() -> None:
    import random

    m = model(draft_tokens=4, accept_length=2.8)
    draw = m.accept_sampler(random.Random(0))
    r = SimRequest(1, 1, 1)
    counts = [draw(r) for _ in range(20_000)]
    assert set(counts) == {1, 2, 3, 4}
    assert sum(counts) / len(counts) == pytest.approx(2.8, abs=0.05)
    assert model().accept_sampler(random.Random(0))(r) == 1  # no speculative decoding: one token


def test_verify_step_writes_a_recurrent_state_per_draft_token() -> None:
    # 16 requests × fp32 state: a 4-token verify writes 4 states each (rollback points), a plain step 1
    m = model(ssm_dtype="float32")
    plain, verify = m.forward_s(16, 16 * 8192, q=1), m.forward_s(16, 16 * 8192, q=4)
    extra_bytes = 3 * 16 * m.state
    assert verify - plain >= 0.9 * extra_bytes / m.bw
