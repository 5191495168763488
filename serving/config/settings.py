"""The one settings tree. Every option is declared once here: type, default, help, bounds.

Sources, highest precedence first (documented in README "Configuration"):
  1. CLI overrides (``--set section.field=value``), passed as init arguments
  2. environment variables ``QWEN_SERVE_<SECTION>__<FIELD>`` (``__`` nests)
  3. the YAML file named by ``--config`` or ``QWEN_SERVE_CONFIG``
  4. the model preset (fields left unset: parsers, context, served name, weights)
  5. the defaults below
Cross-field rules live in :mod:`serving.config.validation`; nothing else reads ``os.environ``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from serving.config.hardware import GpuType
from serving.config.presets import PRESETS, ModelPreset, get_preset


class Section(BaseModel):
    """A settings section: unknown keys are typos and are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineKind(StrEnum):
    SGLANG = "sglang"
    VLLM = "vllm"
    LLAMACPP = "llamacpp"
    SIMULATOR = "simulator"

    @property
    def reserves_gpus(self) -> bool:
        """Engines that run on (real or, for the simulator, emulated) GPUs; llama.cpp runs on CPU."""
        return self is not EngineKind.LLAMACPP


class ModelDtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class KvCacheDtype(StrEnum):
    AUTO = "auto"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"
    BF16 = "bf16"


class SpeculativeAlgorithm(StrEnum):
    NEXTN = "NEXTN"  # the model's own MTP head (SGLang's name; "MTP" parses there but fails at start-up)
    EAGLE = "EAGLE"
    EAGLE3 = "EAGLE3"
    STANDALONE = "STANDALONE"
    NGRAM = "NGRAM"


class SsmDtype(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class RoutingPolicy(StrEnum):
    LEAST_OUTSTANDING = "least_outstanding"
    PREFIX_AFFINITY = "prefix_affinity"
    SESSION_AFFINITY = "session_affinity"
    ROUND_ROBIN = "round_robin"


class ModelSettings(Section):
    preset: str = Field("smollm2-135m", description=f"model preset: one of {', '.join(PRESETS)}")
    path: str | None = Field(None, description="weights: local path, GGUF file or Hugging Face repo id (preset's)")
    revision: str | None = Field(None, description="weights revision (commit or tag) to pin")
    served_name: str | None = Field(None, description="model name clients send; must not contain ':'")
    dtype: ModelDtype = Field(ModelDtype.AUTO, description="activation dtype")
    quantization: str | None = Field(None, description="weight quantization override (e.g. fp8); preset's if unset")
    kv_cache_dtype: KvCacheDtype = Field(KvCacheDtype.AUTO, description="KV cache dtype (fp8 halves KV memory)")
    allow_long_context: bool = Field(False, description="allow a context above the model's native maximum")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
        return v

    @property
    def spec(self) -> ModelPreset:
        return get_preset(self.preset)


class SimulatorSettings(Section):
    """Knobs of the simulator engine (engine.kind = simulator); fault knobs apply per instance."""

    zero_delay: bool = Field(False, description="emit tokens as fast as possible (load-generator benchmarks)")
    time_scale: float = Field(1.0, gt=0, description="multiply every simulated duration by this")
    fixed_ttft_s: float | None = Field(None, ge=0, description="override the model: constant time to first token")
    fixed_tpot_s: float | None = Field(None, ge=0, description="override the model: constant time per output token")
    default_output_tokens: int = Field(64, ge=1, description="tokens generated when max_tokens is unset")
    mtp_accept_length: float = Field(2.8, ge=1.0, description="mean tokens accepted per MTP verify step")
    crash_after_tokens: int | None = Field(None, ge=1, description="fault: exit the process after N streamed tokens")
    hang_after_s: float | None = Field(None, ge=0, description="fault: stop answering after this many seconds")
    slow_start_s: float = Field(0.0, ge=0, description="fault: wait this long before becoming ready")
    fail_health: bool = Field(False, description="fault: /health answers 503")
    hang_scheduler_after_s: float | None = Field(
        None, ge=0, description="fault: the scheduler stops stepping after this many seconds (HTTP still answers)"
    )
    health_timeout_s: float = Field(
        20.0, gt=0, description="/health and /health_generate: 503 when the 1-token generation takes longer"
    )
    heartbeat_s: float = Field(1.0, gt=0, description="multi-node: period of the follower ranks' heartbeats")
    new_token_ratio: float = Field(
        0.7, gt=0, le=1, description="admission: share of max_tokens a running request is assumed to still need"
    )
    sglang_path: str | None = Field(
        None,
        description="unpacked SGLang wheel (the folder holding sglang/): its qwen3 reasoning parser and qwen3_coder "
        "detector parse the simulated model text; unset or not importable: the built-in path",
    )


class EngineSettings(Section):
    kind: EngineKind = Field(EngineKind.LLAMACPP, description="sglang | vllm | llamacpp | simulator")
    binary: str | None = Field(None, description="engine executable (default: the engine's usual entry point)")
    extra_args: list[str] = Field(default_factory=list, description="extra argv appended verbatim (passthrough)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for every rank")
    port: int = Field(
        0, ge=0, le=65535, description="engine HTTP port; 0 (default) picks a free port per replica (pods: 30000)"
    )
    api_key: SecretStr | None = Field(None, description="key the gateway presents to the engine")
    watchdog_timeout_s: float = Field(300.0, gt=0, description="SGLang watchdog: kill a hung scheduler")
    threads: int | None = Field(None, ge=1, description="llama.cpp: CPU threads (default: all cores)")
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)


class ParallelismSettings(Section):
    tp: int = Field(1, ge=1, description="tensor-parallel size")
    pp: int = Field(1, ge=1, description="pipeline-parallel size")
    dp: int = Field(1, ge=1, description="data-parallel size inside one engine instance")
    nodes: int = Field(1, ge=1, description="nodes one engine instance spans")
    gpus_per_node: int = Field(8, ge=1, description="GPUs available on each node")
    gpu_type: GpuType = Field(GpuType.H100, description="h100 | h200 | b200 | cpu")
    cpus_per_rank: float = Field(
        8.0, gt=0, description="CPUs reserved per node bundle of an engine instance (1 without GPUs)"
    )

    @property
    def gpus_per_instance(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def gpus_per_rank(self) -> int:
        return self.gpus_per_instance // self.nodes


class ReasoningSettings(Section):
    parser: str | None = Field(None, description="reasoning parser (preset's: qwen3)")
    thinking_default: bool = Field(True, description="think unless a request says enable_thinking=false")
    preserve_thinking: bool = Field(True, description="keep earlier turns' reasoning in multi-turn requests")


class ToolSettings(Section):
    parser: str | None = Field(None, description="tool-call parser (preset's: qwen3_coder)")


class SpeculativeSettings(Section):
    enabled: bool = Field(True, description="NEXTN (MTP) speculative decoding, when the model has an MTP head")
    algorithm: SpeculativeAlgorithm = Field(SpeculativeAlgorithm.NEXTN, description="NEXTN uses the MTP head")
    num_steps: int = Field(3, ge=1, le=16)
    eagle_topk: int = Field(1, ge=1, le=16)
    num_draft_tokens: int = Field(4, ge=1, le=64)

    @field_validator("algorithm", mode="before")
    @classmethod
    def _mtp_is_spelled_nextn(cls, v: object) -> object:
        if v == "MTP":
            raise ValueError("'MTP' parses in SGLang but fails at start-up: use NEXTN (it drafts with the MTP head)")
        return v


class MemorySettings(Section):
    mem_fraction: float = Field(0.88, gt=0.1, le=0.98, description="share of GPU memory for weights + caches")
    max_running_requests: int | None = Field(
        None, ge=1, description="per instance; unset = what SGLang's state slots and KV token pool admit"
    )
    reserve_full_context: bool = Field(
        False,
        description="reserve the full context of KV for every running request: no retraction ever, far fewer running",
    )
    kv_tokens_per_request: int | None = Field(
        None, ge=1, description="reserve this many KV tokens per running request (as reserve_full_context, smaller)"
    )
    kv_share_tokens: int = Field(
        16384,
        ge=0,
        description="unset max_running_requests leaves each running request at least this many KV-pool tokens on "
        "average (its context and the prefix cache): each running slot's speculative states come out of that pool; "
        "0 = the state slots alone",
    )
    mamba_ssm_dtype: SsmDtype = Field(SsmDtype.BFLOAT16, description="recurrent (GDN) state dtype")
    radix_cache_strategy: str = Field("extra_buffer", pattern="^(auto|no_buffer|extra_buffer|extra_buffer_lazy)$")
    chunked_prefill_size: int | None = Field(None, ge=-1, description="prefill chunk tokens (-1 disables)")
    cuda_graph_max_bs_decode: int | None = Field(None, ge=1)


class ApiKeySettings(Section):
    keys: list[SecretStr] = Field(default_factory=list, description="API keys given inline or by env (JSON list)")
    file: Path | None = Field(
        None,
        description="tenants file (YAML: key digests → tenant, weight, priority, limits) or one key per line; "
        "re-read when it changes, e.g. a mounted Kubernetes Secret",
    )
    required: bool = Field(False, description="refuse requests without a valid key")
    reload_s: float = Field(10.0, gt=0, description="how often the file is checked for changes")


class LimitSettings(Section):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="request body without images")
    max_image_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="request body that carries images (base64 data URLs)"
    )
    max_images: int = Field(32, ge=0, description="image_url parts per request")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="decoded bytes of one data-URL image")
    max_image_pixels: int = Field(7680 * 4320, ge=1, description="width × height of one data-URL image")
    max_tokens: int = Field(32768, ge=1, description="largest max_tokens a request may ask")
    max_messages: int = Field(2048, ge=1)
    max_n: int = Field(8, ge=1)
    max_stop: int = Field(4, ge=1)
    requests_per_min: int | None = Field(None, ge=1, description="per API key")
    tokens_per_min: int | None = Field(None, ge=1, description="per API key: prompt + completion tokens")
    max_in_flight: int = Field(1024, ge=1, description="per gateway replica; beyond it: 503 + Retry-After")
    max_queued: int = Field(
        256, ge=0, description="per gateway replica and model: requests held while engines start or are saturated"
    )
    max_queue_wait_s: float = Field(30.0, gt=0, description="longest wait for saturated engines; then 503")
    share_across_replicas: bool = Field(
        False, description="under Ray: rate limits shared by all gateway replicas (leased blocks)"
    )
    lease_fraction: float = Field(0.05, gt=0, le=1, description="shared limits: block leased per ask, × the limit")
    batch_max_load_ratio: float = Field(
        0.75, gt=0, le=1, description="batch tenants fill engines only to this × capacity (room for interactive)"
    )


class IngressPath(StrEnum):
    HAPROXY = "haproxy"  # HAProxy in front of ingress replicas that serve HTTP themselves
    DIRECT = "direct"  # ingress replicas serve HTTP themselves, no proxy
    PROXY = "proxy"  # Ray Serve's default HTTP proxy actor (one extra hop)


class GatewaySettings(Section):
    ingress: IngressPath = Field(IngressPath.HAPROXY, description="how clients reach the gateway replicas")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1)
    request_timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    api_keys: ApiKeySettings = Field(default_factory=ApiKeySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)


class RoutingSettings(Section):
    policy: RoutingPolicy = Field(RoutingPolicy.LEAST_OUTSTANDING)
    session_header: str = Field("x-session-id")
    prefix_chars: int = Field(
        2048,
        ge=16,
        description="prefix affinity: leading characters (system + first user message) that hash to "
        "a conversation's home engine, used when this gateway has not seen the conversation",
    )
    affinity_max_load_ratio: float = Field(
        1.5,
        ge=1.0,
        description="prefix affinity: a new conversation skips engines above this × the mean outstanding "
        "requests (one with history moves only when the prompt work queued on its engine outweighs the miss)",
    )
    affinity_miss_weight: float = Field(
        2.0,
        ge=0.0,
        description="prefix affinity: each uncached character beyond the best-cached engine's costs "
        "this many characters of queued prefill on top of the wait (0: least wait only; higher: stickier)",
    )
    prefix_cache_chars: int = Field(
        1 << 24,
        ge=4096,
        description="prefix affinity: conversation characters remembered per engine to estimate "
        "its prefix cache (least recently used forgotten)",
    )
    retry_before_first_byte: bool = Field(True)


class AutoscalingSettings(Section):
    min_replicas: int = Field(1, ge=0, description="0 allows scale to zero")
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_load_per_replica: float = Field(16.0, gt=0, description="running + queued engine requests per replica")
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    metrics_interval_s: float = Field(2.0, gt=0)
    look_back_period_s: float = Field(10.0, gt=0)
    cold_start_wait_s: float = Field(
        60.0, ge=0, description="min_replicas=0: the gateway holds requests this long while a replica starts"
    )


class ReplicaSettings(Section):
    startup_timeout_s: float = Field(1800.0, gt=0, description="engine start + weight load before it is failed")
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)
    health_generate_interval_s: float = Field(
        30.0,
        ge=0,
        description="engines whose /health does not generate (llama.cpp, vLLM): the health check also "
        "generates one token, at most this often (0: every check)",
    )
    drain_grace_s: float = Field(30.0, ge=0, description="in-flight requests get this long on shutdown")


class TelemetrySettings(Section):
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318")
    service_name: str = Field("qwen-serve")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = Field(True)


class RayClusterSettings(Section):
    address: str | None = Field(None, description="Ray cluster to join (unset: start a local one)")
    app_name: str = Field("qwen-serve")


class Settings(BaseSettings):
    """The whole configuration. Construct with :func:`serving.config.load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="QWEN_SERVE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=False,
    )

    yaml_source: ClassVar[Path | None] = None  # set by the loader on a per-load subclass

    config: Path | None = Field(None, description="YAML file (also QWEN_SERVE_CONFIG)")
    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    parallelism: ParallelismSettings = Field(default_factory=ParallelismSettings)
    context_length: int | None = Field(None, ge=256, description="tokens; preset's maximum (262144) if unset")
    reasoning: ReasoningSettings = Field(default_factory=ReasoningSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    speculative: SpeculativeSettings = Field(default_factory=SpeculativeSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    replica: ReplicaSettings = Field(default_factory=ReplicaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    ray: RayClusterSettings = Field(default_factory=RayClusterSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI overrides) > env > YAML file. The YAML path is resolved by the loader and
        # handed over through the class attribute below, so this stays a pure function of inputs.
        yaml_file = cls.yaml_source
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _fill_from_preset(self) -> Settings:
        """Fields left unset take the model preset's value (step 4 of the precedence list)."""
        spec = get_preset(self.model.preset)
        if self.model.path is None:
            self.model.path = spec.default_weights()
        if self.model.served_name is None:
            self.model.served_name = spec.served_name
        if self.model.quantization is None and spec.quantization and not spec.is_gguf:
            self.model.quantization = spec.quantization
        if self.context_length is None:
            self.context_length = spec.max_context if not spec.is_gguf else 4096
        if self.reasoning.parser is None:
            self.reasoning.parser = spec.reasoning_parser
        if self.tools.parser is None:
            self.tools.parser = spec.tool_call_parser
        if not self.uses_gpus and "cpus_per_rank" not in self.parallelism.model_fields_set:
            self.parallelism.cpus_per_rank = 1.0  # a laptop: the GPU-node default of 8 would never schedule
        if not spec.has_mtp and self.speculative.enabled and self.speculative.algorithm == "NEXTN":
            self.speculative.enabled = False  # no MTP head to draft with
        return self

    @property
    def uses_gpus(self) -> bool:
        """GPU engines reserve GPUs unless the settings say the "GPU" is the CPU (llama.cpp, laptops)."""
        return self.engine.kind.reserves_gpus and self.parallelism.gpu_type != GpuType.CPU

    @property
    def preset(self) -> ModelPreset:
        return get_preset(self.model.preset)

    @property
    def resolved_context_length(self) -> int:
        assert self.context_length is not None  # filled by _fill_from_preset
        return self.context_length

    def redacted(self) -> dict[str, Any]:
        """The resolved settings as plain data with every secret replaced by '**********'."""
        return self.model_dump(mode="json", exclude={"config"})
