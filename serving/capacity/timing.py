"""Timing model of one SGLang instance on a virtual GPU (pure arithmetic, no clocks).

Per forward pass:
- **prefill** of ``n`` new tokens after ``c`` cached ones:
  FLOPs = 2 × active params × n + 4 × full-attention layers × heads × head_dim × n × (c + n/2),
  at ``prefill_mfu`` of the GPU's dense peak (FP8 peak for FP8 weights), divided over TP.
- **decode step** of a batch (every running request advances together):
  time = max(bytes ÷ (HBM bandwidth × ``hbm_efficiency``), FLOPs ÷ (peak × ``decode_mfu``))
  where bytes = weights touched ÷ TP + KV of every running request's context + recurrent state
  (read and written), FLOPs as above for the batch's tokens. MoE weights touched for ``T`` tokens:
  the non-expert part plus experts × (1 − (1 − top_k/experts)^T).
- a fixed per-layer cost (kernel launches, CUDA-graph replay) per forward pass; MoE layers cost more.
- TP adds two all-reduces per layer (latency + bytes ÷ NVLink bandwidth).
- **MTP** (``--speculative-algorithm`` set): one step verifies ``draft`` tokens per request (the batch
  grows ``draft``×) after ``draft − 1`` draft passes of the one MTP layer + LM head, and yields
  ``accept_length`` tokens per request on average.

Capacity: :mod:`serving.capacity` (SGLang's state-slot pool and paged KV token pool); admission and
retraction: ``scheduler.py``.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

from serving.capacity import Capacity, Layout, capacity, kv_bytes_per_token, weight_bytes
from serving.config.hardware import GPU_PROFILES, GpuProfile, GpuType
from serving.config.presets import ModelPreset, get_preset

SPEC_DEFAULT_MAX_RUNNING = 48  # SGLang's --max-running-requests when unset with speculative decoding
MOE_EXPERTS = 256
MOE_TOP_K = 8


@dataclass(frozen=True)
class Calibration:
    """Efficiency constants, chosen against the *fit* cells only (``report.py`` names the sets)."""

    hbm_efficiency: float = 0.92  # share of the HBM bandwidth a decode step achieves (Hopper; at its cap)
    # Per GPU where the share differs (GpuType value → share): SGLang's kernels for this hybrid model
    # reach far less of Blackwell's 8 TB/s (fitted on the fit set's one B200 cell).
    hbm_efficiency_by_gpu: tuple[tuple[str, float], ...] = (("b200", 0.549),)
    prefill_mfu: float = 0.63
    # Block-wise FP8 GEMMs (per-block scales) reach a far smaller share of the FP8 peak than bf16
    # GEMMs of the bf16 peak.
    prefill_mfu_fp8: float = 0.436
    # A decode step streams block-FP8 weights at this share of the bandwidth bf16 weights get
    # (per-block dequantization in small-batch GEMMs): fitted on SGLang PR 34307's batch-1 cells.
    fp8_weight_efficiency: float = 0.84
    # MoE prefill (grouped expert GEMMs, routing) reaches this share of the dense prefill MFU.
    moe_prefill_efficiency: float = 0.647
    decode_mfu: float = 0.45
    layer_overhead_s: float = 6e-6
    moe_layer_overhead_s: float = 45e-6
    allreduce_latency_s: float = 8e-6
    draft_overhead_s: float = 60e-6  # one MTP draft pass: launches of its layer + LM head + sampling


DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Deployment:
    """The facts of one instance that the timing model reads (what its argv says)."""

    preset: ModelPreset
    gpu: GpuType = GpuType.H100
    tp: int = 1
    pp: int = 1
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    ssm_dtype: str = "float32"
    mem_fraction: float = 0.88
    max_running: int | None = None
    draft_tokens: int | None = None  # None: no speculative decoding
    accept_length: float = 2.8
    extra_buffer: bool = True

    @classmethod
    def of(cls, preset: str, **kw: object) -> Deployment:
        return cls(get_preset(preset), **kw)  # type: ignore[arg-type]

    def with_(self, **kw: object) -> Deployment:
        return replace(self, **kw)  # type: ignore[arg-type]


class TimingModel:
    def __init__(self, d: Deployment, cal: Calibration = DEFAULT_CALIBRATION) -> None:
        self.d, self.cal = d, cal
        p = d.preset
        self.gpu: GpuProfile = GPU_PROFILES[d.gpu]
        self.shards = d.tp * d.pp
        self.weights_total = weight_bytes(p, d.quantization)
        self.bytes_per_param = self.weights_total / p.total_params
        self.fp8 = d.quantization == "fp8" or p.quantization == "fp8"
        self.peak = (self.gpu.fp8_flops if self.fp8 else self.gpu.bf16_flops) * d.tp
        hbm_share = dict(cal.hbm_efficiency_by_gpu).get(GpuType(d.gpu).value, cal.hbm_efficiency)
        self.bw = self.gpu.hbm_bandwidth_bytes_s * hbm_share
        # what a decode step streams block-FP8 weights at (dequantizing GEMMs at a small batch)
        self.weight_bw = self.bw * (cal.fp8_weight_efficiency if self.fp8 else 1.0)
        self.kv_per_token = kv_bytes_per_token(p, d.kv_cache_dtype) // (min(d.tp, p.kv_heads) * d.pp)
        self.spec = d.draft_tokens is not None and d.draft_tokens > 1
        # The MTP layer keeps its own KV pool of the same size: one more full-attention layer.
        self.pool_kv_per_token = self.kv_per_token * (p.full_attention_layers + 1) // p.full_attention_layers
        self.state = p.state_bytes(d.ssm_dtype) // self.shards
        self.moe = p.family == "qwen3.6-moe"
        if self.moe:
            frac = MOE_TOP_K / MOE_EXPERTS
            self.non_expert = (p.active_params - p.total_params * frac) / (1 - frac)
        else:
            self.non_expert = p.total_params
        self.attn_flops_per_pair = 4 * p.full_attention_layers * p.attention_heads * p.head_dim
        per_layer = cal.moe_layer_overhead_s if self.moe else cal.layer_overhead_s
        self.launch_s = p.layers * per_layer
        self.accept = min(d.accept_length, float(d.draft_tokens or 1)) if self.spec else 1.0
        mfu = cal.prefill_mfu_fp8 if self.fp8 else cal.prefill_mfu
        self.prefill_mfu = mfu * (cal.moe_prefill_efficiency if self.moe else 1.0)

    def accept_sampler(self, rng: random.Random, spread: float = 0.0) -> Callable[[object], int]:
        """Tokens one request gets from one verify step, drawn as speculative decoding yields them:
        each draft position is accepted with probability ``a`` while the ones before it were (the
        step's own token always counts), ``a`` chosen so the mean is ``accept_length``. With
        ``spread``, each request keeps its own ``a`` (× a uniform factor in 1 ± spread): how well the
        draft guesses depends on the text, so some requests accept more all along."""
        draft = int(self.d.draft_tokens or 1)
        if not self.spec or draft <= 1:
            return lambda _r: 1
        lo, hi = 0.0, 1.0
        for _ in range(60):  # 1 + a + a² + … + a^(draft−1) = accept, increasing in a
            a = (lo + hi) / 2
            lo, hi = (a, hi) if sum(a**i for i in range(draft)) < self.accept else (lo, a)
        mean_a = (lo + hi) / 2
        own: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

        def draw(r: object) -> int:
            a = own.get(r)
            if a is None:
                a = own[r] = min(0.999, mean_a * (1 + spread * (2 * rng.random() - 1)))
            k = 1
            while k < draft and rng.random() < a:
                k += 1
            return k

        return draw

    # ---- capacity ----------------------------------------------------------------------------
    def capacity(self) -> Capacity:
        """State slots, KV token pool and running bound (:mod:`serving.capacity`, SGLang's pools).
        Without ``--max-running-requests``, SGLang caps it at 48 with speculative decoding."""
        d = self.d
        layout = Layout(
            d.preset,
            d.gpu,
            tp=d.tp,
            pp=d.pp,
            mem_fraction=d.mem_fraction,
            kv_cache_dtype=d.kv_cache_dtype,
            ssm_dtype=d.ssm_dtype,
            quantization=d.quantization,
            draft_tokens=d.draft_tokens,
            radix_cache_strategy="extra_buffer" if d.extra_buffer else "no_buffer",
        )
        requested = d.max_running if d.max_running is not None else (SPEC_DEFAULT_MAX_RUNNING if self.spec else None)
        return capacity(layout, requested)

    # ---- forward passes ----------------------------------------------------------------------
    def weight_bytes_touched(self, tokens: int) -> float:
        p = self.d.preset
        if not self.moe:
            params = p.total_params
        else:
            frac = 1 - (1 - MOE_TOP_K / MOE_EXPERTS) ** max(tokens, 1)
            params = self.non_expert + (p.total_params - self.non_expert) * frac
        return params * self.bytes_per_param / self.shards

    def _comm_s(self, tokens: int) -> float:
        if self.d.tp <= 1:
            return 0.0
        msg = tokens * self.d.preset.hidden_size * 2
        per = self.cal.allreduce_latency_s + 2 * msg * (self.d.tp - 1) / self.d.tp / self.gpu.nvlink_bandwidth_bytes_s
        return 2 * self.d.preset.layers * per

    def prefill_s(self, new_tokens: int, cached_tokens: int = 0) -> float:
        """One prefill pass over ``new_tokens`` after ``cached_tokens`` already in the cache."""
        return self.prefill_batch_s([(new_tokens, cached_tokens)])

    def prefill_batch_s(self, chunks: list[tuple[int, int]]) -> float:
        """One prefill pass over several requests' chunks: (new tokens, tokens already cached) each;
        causal attention is per request (each chunk attends to its own cache and itself)."""
        new = sum(n for n, _ in chunks)
        if new <= 0:
            return 0.0
        p = self.d.preset
        pairs = sum(n * (c + n / 2) for n, c in chunks)
        flops = 2 * p.active_params * new + self.attn_flops_per_pair * pairs
        compute = flops / (self.peak * self.prefill_mfu)
        memory = (self.weight_bytes_touched(new) + sum(c for _, c in chunks) * self.kv_per_token) / self.bw
        return max(compute, memory) + self.launch_s + self._comm_s(new)

    def forward_s(self, batch: int, total_context: int, q: int = 1) -> float:
        """One decode/verify pass: ``batch`` requests, ``q`` query tokens each, ``total_context``
        tokens of context summed over the batch."""
        if batch <= 0:
            return 0.0
        p = self.d.preset
        tokens = batch * q
        # recurrent state: read once, written once per query token (a verify step keeps the state
        # after every draft position, SGLang's intermediate states, to roll back to the accepted one)
        cache_bytes = total_context * self.kv_per_token + (1 + q) * batch * self.state
        memory = self.weight_bytes_touched(tokens) / self.weight_bw + cache_bytes / self.bw
        flops = 2 * p.active_params * tokens + self.attn_flops_per_pair * q * total_context
        return max(memory, flops / (self.peak * self.cal.decode_mfu)) + self.launch_s + self._comm_s(tokens)

    def draft_pass_s(self, batch: int, total_context: int = 0) -> float:
        """One MTP draft pass: its full-attention layer (weights + its own KV of every request's
        context) and the LM head."""
        p = self.d.preset
        layer_params = self.weight_bytes_touched(batch) / max(p.layers, 1)
        head = p.vocab_size * p.hidden_size * 2 / self.shards  # the LM head stays bf16 in FP8 checkpoints
        kv = total_context * self.kv_per_token / max(p.full_attention_layers, 1)
        memory = layer_params / self.weight_bw + (head + kv) / self.bw
        return memory + self.cal.draft_overhead_s + self._comm_s(batch) / p.layers

    def decode_step_s(self, batch: int, total_context: int) -> float:
        """Wall time of one decode step of the whole batch (with MTP: drafts + one verify)."""
        if batch <= 0:
            return 0.0
        if not self.spec:
            return self.forward_s(batch, total_context)
        draft = int(self.d.draft_tokens or 1)
        return (draft - 1) * self.draft_pass_s(batch, total_context) + self.forward_s(batch, total_context, q=draft)

    @property
    def tokens_per_step(self) -> float:
        return self.accept

    def memory_bound(self, batch: int, total_context: int) -> bool:
        """Whether a plain decode pass of this batch is limited by HBM bandwidth (vs compute)."""
        p = self.d.preset
        bytes_ = self.weight_bytes_touched(batch) + total_context * self.kv_per_token + 2 * batch * self.state
        flops = 2 * p.active_params * batch + self.attn_flops_per_pair * total_context
        return bytes_ / self.bw >= flops / (self.peak * self.cal.decode_mfu)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def steps_for(tokens: int, per_step: float) -> int:
    return max(0, math.ceil(tokens / per_step)) if per_step > 0 else tokens
