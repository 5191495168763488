"""Per-GPU memory fit of one engine instance, from the one capacity model (:mod:`serving.capacity`).

Two admission modes:
- **pool** (default): as SGLang admits — running requests are bounded by the recurrent-state slots
  and the paged KV token pool; under KV pressure SGLang retracts (re-queues) the newest requests.
- **reserve** (opt-in: ``memory.reserve_full_context`` or ``memory.kv_tokens_per_request``): every
  running request is counted at its full reservation (the context, or ``kv_tokens_per_request``), so
  the pool can never run out and nothing is ever retracted — at the price of far fewer running.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.capacity import Capacity, Layout, capacity, kv_bytes_per_token, most_running_reserving, weight_bytes
from serving.config.hardware import GpuType
from serving.config.presets import ModelPreset

__all__ = ["MemoryFit", "kv_bytes_per_token", "kv_tokens_that_fit", "memory_fit", "weight_bytes"]


@dataclass(frozen=True)
class MemoryFit:
    layout: Layout
    cap: Capacity
    reserve_tokens: int | None  # KV tokens reserved per running request (reserve mode) or None (pool)
    running: int  # the requested running requests (or the most that fit when unset)
    max_running: int  # the most requests that fit in this mode (0: not even one)

    @property
    def budget_bytes(self) -> int:
        return self.cap.budget_bytes

    @property
    def weights_bytes(self) -> int:
        return self.cap.weights_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.cap.kv_bytes_per_token

    @property
    def state_bytes_per_request(self) -> int:
        return self.cap.state_bytes * self.cap.slots_per_request

    @property
    def fits(self) -> bool:
        return self.running >= 1 and self.max_running >= 1 and self.running <= self.max_running


def memory_fit(
    preset: ModelPreset,
    *,
    gpu_type: GpuType,
    tp: int,
    pp: int,
    mem_fraction: float,
    context_length: int,
    running: int | None,
    kv_tokens_per_request: int | None = None,
    reserve_full_context: bool = False,
    kv_cache_dtype: str = "auto",
    ssm_dtype: str = "bfloat16",
    quantization: str | None = None,
    draft_tokens: int | None = None,
    radix_cache_strategy: str = "extra_buffer",
) -> MemoryFit:
    layout = Layout(
        preset,
        gpu_type,
        tp=tp,
        pp=pp,
        mem_fraction=mem_fraction,
        kv_cache_dtype=kv_cache_dtype,
        ssm_dtype=ssm_dtype,
        quantization=quantization,
        draft_tokens=draft_tokens,
        radix_cache_strategy=radix_cache_strategy,
    )
    cap = capacity(layout, running)
    reserve = None
    if kv_tokens_per_request is not None or reserve_full_context:
        reserve = min(kv_tokens_per_request or context_length, context_length)
    most = most_running_reserving(layout, reserve) if reserve is not None else capacity(layout).max_running
    most = max(0, most) if cap.kv_pool_tokens >= 1 else 0
    return MemoryFit(layout, cap, reserve, running if running is not None else most, most)


def kv_tokens_that_fit(fit: MemoryFit) -> int:
    """KV tokens per request that would let ``fit.running`` requests each reserve them."""
    if fit.running > fit.cap.state_bound:
        return 0
    return fit.cap.kv_pool_tokens // max(fit.running, 1)
