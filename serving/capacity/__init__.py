"""How one SGLang instance divides GPU memory and admits requests: the one capacity model.

Used by load-time validation (``serving.config.memory``), the launch plan's
``--max-running-requests`` default, the simulator (``timing.py`` / ``scheduler.py``) and the
capacity planner (``loadtest/planner.py``). Facts from SGLang 0.5.23
(``srt/mem_cache/kv_cache_configurator.py``):

- static budget = GPU memory × ``--mem-fraction-static``; weights ÷ (TP × PP) come off it, the rest
  is split between the Mamba/GDN state pool and the paged KV token pool in the ratio
  ``--mamba-full-memory-ratio`` (0.9 : 1 by default).
- the state pool holds ``K`` slots of one request's recurrent state (÷ TP × PP); with speculative
  decoding each running request also holds ``draft`` intermediate states (SGLang's joint solve:
  ``K = (budget − s·(1 + D)) ÷ (s·(1 + D / r))``).
- a running request pins ``r`` slots: 3 with the radix cache, + 2 with ``extra_buffer`` (overlap
  schedule), + 1 with ``extra_buffer_lazy``; so running ≤ ``K ÷ r``, and ≤ KV tokens ÷ 2.
- the KV pool is what is left, in tokens of every full-attention layer (+ the MTP layer's own KV
  with speculative decoding).

Admission (SGLang's scheduler): a request is admitted when a running slot is free and the pool can
hold its prompt plus ``new_token_ratio`` × its remaining ``max_tokens`` beyond what running requests
are expected to still need; when decoding then runs out of pool, the newest requests are
*retracted* (their KV freed, re-queued, recomputed later). Nothing is reserved at full context.
That bound — state slots and token pool — is the default here, lowered where needed so each
running request keeps ``memory.kv_share_tokens`` of the pool on average (every running slot's
speculative states come out of the pool, and with them its prefix cache); reserving the full
context (or ``kv_tokens_per_request``) for every running request is the opt-in ``reserve`` mode:
no retraction ever, at the price of far fewer running requests.

What else comes off the static budget before the pools (SGLang 0.5.23, ``kv_cache_configurator.py``
``_profile_available_bytes``: the budget is what is free after loading *everything*): the MTP draft
worker's own layer with speculative decoding (it shares the target's embedding and LM head:
``qwen3_5_mtp.py``), and ``SGLANG_VLM_CACHE_SIZE_MB`` (100 MiB) for a multimodal model.

When the operator sets no ``--mem-fraction-static`` (a published benchmark), SGLang derives it
(``arg_groups/memory_hook.py``): :func:`sglang_default_mem_fraction`, with the GPU-memory defaults
of ``--chunked-prefill-size`` and the decode CUDA-graph batch (:func:`sglang_memory_defaults`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # serving.config imports this module (validation): nothing from it at import time
    from serving.config.hardware import GpuType
    from serving.config.presets import ModelPreset

MAMBA_FULL_MEMORY_RATIO = 0.9  # SGLang's --mamba-full-memory-ratio fallback
STATE_SLOTS_BASE = 3  # SGLang: MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO (radix cache on)
STATE_SLOTS_EXTRA = {"extra_buffer": 2, "auto": 2, "extra_buffer_lazy": 1, "no_buffer": 0}
NEW_TOKEN_RATIO = 0.7  # SGLang's initial new_token_ratio: share of max_tokens still expected
DEFAULT_MAX_RUNNING_CAP = 256  # the launch plan's ceiling: SGLang's largest CUDA-graph batch by default
MIB = 1 << 20
VLM_CACHE_BYTES = 100 * MIB  # SGLANG_VLM_CACHE_SIZE_MB's default, reserved out of a multimodal model's pools


def kv_bytes_per_token(preset: ModelPreset, kv_cache_dtype: str) -> int:
    return preset.kv_bytes_per_token // 2 if kv_cache_dtype.startswith("fp8") else preset.kv_bytes_per_token


def weight_bytes(preset: ModelPreset, quantization: str | None) -> int:
    if quantization == "fp8" and preset.quantization is None:
        return preset.weight_bytes // 2  # online FP8 of a bf16 checkpoint
    return preset.weight_bytes


def draft_weight_bytes(preset: ModelPreset, quantization: str | None) -> int:
    """The MTP draft worker's own weights: its one decoder layer (estimated as one layer's share of
    the checkpoint; embedding and LM head are the target's, shared)."""
    return weight_bytes(preset, quantization) // max(preset.layers, 1) if preset.has_mtp else 0


@dataclass(frozen=True)
class MemoryDefaults:
    """What SGLang picks from the GPU's memory when the operator sets nothing."""

    chunked_prefill_size: int  # --chunked-prefill-size
    cuda_graph_max_bs: int  # the decode CUDA graphs' largest batch
    mem_fraction: float  # --mem-fraction-static


def sglang_memory_defaults(preset: ModelPreset, gpu: GpuType, tp: int = 1, pp: int = 1) -> MemoryDefaults:
    """SGLang 0.5.23's ``handle_gpu_memory_settings``: chunked prefill 2k/4k/8k/16k and decode graphs
    by GPU memory, then ``mem_fraction_static = (memory − reserved) ÷ memory`` with reserved =
    512 MiB + 1.5 MiB × chunk tokens + TP×PP/8 GiB + 2 MiB × graph batch (at least 10 GiB above
    60 GiB), shrunk for a multimodal model by SGLang's ViT-size factor (``adjust_mem_fraction_for_vlm``:
    0.95 × (1 − 0.1 × (24 × h² ÷ (24 × 1024²) − 1)), clamped to 0.8–1.05; SGLang reads the ViT's
    ``num_hidden_layers``, which the Qwen3.5/3.6 vision config names ``depth``, so 24 is used).
    Not counted: prefill CUDA-graph buffers (8 MiB per captured size when that graph is enabled)."""
    from serving.config.hardware import GPU_PROFILES

    mem_mib = GPU_PROFILES[gpu].memory_bytes / MIB
    gib = 1024
    if mem_mib < 20 * gib:
        chunk, graph_bs = 2048, 8
    elif mem_mib < 35 * gib:
        chunk, graph_bs = 4096, 48 if tp < 4 else 160
    elif mem_mib < 60 * gib:
        chunk, graph_bs = 4096, 32 if tp < 4 else 160
    elif mem_mib < 160 * gib:
        chunk, graph_bs = 8192, 256 if tp < 4 else 512
    else:
        chunk, graph_bs = 16384, 512
    reserved = 512 + max(chunk, 2048) * 1.5 + tp * pp / 8 * 1024 + 2 * graph_bs
    if mem_mib > 60 * gib:
        reserved = max(reserved, 10 * gib)
    fraction = round((mem_mib - reserved) / mem_mib, 3)
    if preset.vision_hidden_size:
        complexity = preset.vision_hidden_size**2 / 1024**2
        fraction *= 0.95 * max(0.8, min(1.05, 1.0 - 0.1 * (complexity - 1.0)))
    return MemoryDefaults(chunk, graph_bs, fraction)


def sglang_default_mem_fraction(preset: ModelPreset, gpu: GpuType, tp: int = 1, pp: int = 1) -> float:
    return sglang_memory_defaults(preset, gpu, tp, pp).mem_fraction


@dataclass(frozen=True)
class Layout:
    """What the capacity of one instance depends on (what its argv says)."""

    preset: ModelPreset
    gpu: GpuType
    tp: int = 1
    pp: int = 1
    mem_fraction: float = 0.88
    kv_cache_dtype: str = "auto"
    ssm_dtype: str = "bfloat16"
    quantization: str | None = None
    draft_tokens: int | None = None  # None: no speculative decoding
    radix_cache_strategy: str = "extra_buffer"

    @property
    def shards(self) -> int:
        return self.tp * self.pp

    @property
    def spec(self) -> bool:
        return self.draft_tokens is not None and self.draft_tokens > 1


@dataclass(frozen=True)
class Capacity:
    budget_bytes: int
    weights_bytes: int  # target + MTP draft layer, on one GPU (+ the multimodal cache reservation)
    state_bytes: int  # one state slot on one GPU
    state_slots: int  # K, the state pool's slots (0 for models without recurrent state)
    slots_per_request: int
    state_pool_bytes: int  # slots + speculative intermediate states
    kv_bytes_per_token: int  # one token of the pool on one GPU (incl. the MTP layer's KV)
    kv_pool_tokens: int
    max_running: int  # the bound: state slots and token pool (and an explicit setting)
    requested: int | None  # an explicit --max-running-requests

    @property
    def state_bound(self) -> int:
        """Running requests the state pool holds (no bound without recurrent state)."""
        return self.state_slots // self.slots_per_request if self.state_bytes else 1 << 30

    @property
    def room_bytes(self) -> int:
        return self.budget_bytes - self.weights_bytes

    @property
    def fits(self) -> bool:
        return self.max_running >= 1 and self.kv_pool_tokens >= 1

    def reserve_bound(self, tokens: int) -> int:
        """Running requests that fit when each reserves ``tokens`` KV tokens (no retraction)."""
        return min(self.state_bound, self.kv_pool_tokens // max(tokens, 1))


def capacity(layout: Layout, max_running: int | None = None) -> Capacity:
    """The state pool, the KV token pool and the running bound of one instance."""
    from serving.config.hardware import GPU_PROFILES

    L, p = layout, layout.preset
    budget = int(GPU_PROFILES[L.gpu].memory_bytes * L.mem_fraction)
    weights = weight_bytes(p, L.quantization) // L.shards
    if L.spec:
        weights += draft_weight_bytes(p, L.quantization) // L.shards
    if p.vision_hidden_size:
        weights += VLM_CACHE_BYTES
    room = max(0, budget - weights)
    kv_heads_split = min(L.tp, p.kv_heads) * L.pp
    kv = kv_bytes_per_token(p, L.kv_cache_dtype) // kv_heads_split
    if L.spec and p.full_attention_layers:
        kv = kv * (p.full_attention_layers + 1) // p.full_attention_layers
    state = p.state_bytes(L.ssm_dtype) // L.shards
    ratio = STATE_SLOTS_BASE + STATE_SLOTS_EXTRA.get(L.radix_cache_strategy, 2)
    draft = int(L.draft_tokens or 0) if L.spec else 0
    if state:
        mamba_budget = room * MAMBA_FULL_MEMORY_RATIO / (1 + MAMBA_FULL_MEMORY_RATIO)
        if draft:
            slots = int((mamba_budget - state * (1 + draft)) // (state * (1 + draft / ratio)))
        else:
            slots = int((mamba_budget - state) // state)
        slots = max(0, slots)
        bound = slots // ratio
    else:
        slots, bound = 0, 1 << 30
    running = bound if max_running is None else min(max_running, bound)
    # Intermediate states of speculative decoding are sized by the running requests (+1 padding).
    state_pool = ((slots + 1) * state + (state * (running + 1) * draft if draft else 0)) if state else 0
    pool = max(0, room - state_pool) // kv if kv else 1 << 40
    running = max(0, min(running, pool // 2))
    return Capacity(budget, weights, state, slots, ratio, state_pool, kv, int(pool), running, max_running)


def most_running_reserving(layout: Layout, tokens: int) -> int:
    """The largest ``n`` such that ``n`` running requests each holding ``tokens`` KV tokens fit (the
    speculative intermediate states are sized by ``n`` too, so the pool shrinks as ``n`` grows)."""
    lo, hi = 0, min(capacity(layout).state_bound, 1 << 20)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if capacity(layout, mid).reserve_bound(tokens) >= mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def default_max_running(layout: Layout, share_tokens: int = 0) -> int:
    """The launch plan's ``--max-running-requests`` when the operator sets none: what SGLang's own
    pools admit (state slots, token pool), no more than leave each running request ``share_tokens``
    of the KV pool on average (``memory.kv_share_tokens``; 0: no such bound), capped at
    :data:`DEFAULT_MAX_RUNNING_CAP`. Passed explicitly: with speculative decoding SGLang would
    otherwise cap it at 48 silently."""
    most = capacity(layout).max_running
    if share_tokens:
        most = min(most, most_running_reserving(layout, share_tokens))
    return max(1, min(most, DEFAULT_MAX_RUNNING_CAP))


def admission_reserve(prompt_tokens: int, max_new: int, ratio: float = NEW_TOKEN_RATIO) -> int:
    """KV tokens the scheduler counts for a request when admitting it (SGLang's estimate)."""
    return prompt_tokens + int(max_new * ratio + 0.999)
