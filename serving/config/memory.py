"""Per-GPU memory arithmetic for one engine instance: does the configuration fit?

    weights / (tp × pp)
  + running × (state / (tp × pp) + kv_tokens × kv_per_token / (min(tp, kv_heads) × pp))
  ≤ GPU memory × mem_fraction

KV heads are split by TP only up to their count (beyond it they replicate); layers are split by PP.
``kv_tokens`` is the full context unless the operator reserves less per request (then SGLang may
preempt under pressure). The remaining (1 − mem_fraction) is left for activations and CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.config.hardware import GPU_PROFILES, GpuType
from serving.config.presets import ModelPreset


@dataclass(frozen=True)
class MemoryFit:
    budget_bytes: int
    weights_bytes: int
    per_request_bytes: int
    state_bytes_per_request: int
    kv_bytes_per_token: int  # on one GPU
    running: int
    max_running: int  # the most requests that fit (0: not even one)

    @property
    def need_bytes(self) -> int:
        return self.weights_bytes + self.running * self.per_request_bytes

    @property
    def fits(self) -> bool:
        return self.running >= 1 and self.need_bytes <= self.budget_bytes


def kv_bytes_per_token(preset: ModelPreset, kv_cache_dtype: str) -> int:
    return preset.kv_bytes_per_token // 2 if kv_cache_dtype.startswith("fp8") else preset.kv_bytes_per_token


def weight_bytes(preset: ModelPreset, quantization: str | None) -> int:
    if quantization == "fp8" and preset.quantization is None:
        return preset.weight_bytes // 2  # online FP8 of a bf16 checkpoint
    return preset.weight_bytes


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
    kv_cache_dtype: str = "auto",
    ssm_dtype: str = "bfloat16",
    quantization: str | None = None,
) -> MemoryFit:
    shards = tp * pp
    budget = int(GPU_PROFILES[gpu_type].memory_bytes * mem_fraction)
    weights = weight_bytes(preset, quantization) // shards
    kv_tokens = min(kv_tokens_per_request or context_length, context_length)
    kv_per_gpu = kv_bytes_per_token(preset, kv_cache_dtype) // (min(tp, preset.kv_heads) * pp)
    state = preset.state_bytes(ssm_dtype) // shards
    per_request = state + kv_tokens * kv_per_gpu
    max_running = max(0, (budget - weights) // per_request) if per_request else 1 << 20
    chosen = running if running is not None else max_running
    return MemoryFit(budget, weights, per_request, state, kv_per_gpu, chosen, max_running)


def kv_tokens_that_fit(fit: MemoryFit) -> int:
    """KV tokens per request that would let ``fit.running`` requests fit (0 if none would)."""
    room = (fit.budget_bytes - fit.weights_bytes) // max(fit.running, 1) - fit.state_bytes_per_request
    return max(0, room // fit.kv_bytes_per_token) if fit.kv_bytes_per_token else 0
