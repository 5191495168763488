"""Cross-field rules, checked when settings load. Each rule is one function in ``RULES``; each
refusal names the field and says what would work instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from serving.capacity import DEFAULT_MAX_RUNNING_CAP, default_max_running
from serving.config.hardware import GIB, GPU_PROFILES
from serving.config.memory import MemoryFit, kv_tokens_that_fit, memory_fit
from serving.config.settings import EngineKind, Settings


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """Settings that cannot run. ``problems`` lists every refusal, each naming its field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


Rule = Callable[[Settings], Iterator[Problem]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


@rule
def tp_divides_heads(s: Settings) -> Iterator[Problem]:
    heads = s.preset.attention_heads
    if heads % s.parallelism.tp:
        ok = ", ".join(str(d) for d in s.preset.tp_choices)
        yield Problem(
            "parallelism.tp",
            f"{s.parallelism.tp} does not divide the {heads} attention heads of {s.model.preset}; use one of {ok}",
        )


@rule
def ranks_fill_nodes(s: Settings) -> Iterator[Problem]:
    p = s.parallelism
    if (p.tp * p.pp) % p.nodes:
        yield Problem(
            "parallelism.nodes",
            f"tp × pp = {p.tp * p.pp} is not a multiple of nodes = {p.nodes}; every node must hold the same "
            "number of ranks (change tp, pp or nodes)",
        )
    elif p.gpus_per_rank > p.gpus_per_node:
        yield Problem(
            "parallelism.gpus_per_node",
            f"each node would need {p.gpus_per_rank} GPUs but has {p.gpus_per_node}; raise parallelism.nodes to "
            f"{-(-p.gpus_per_instance // p.gpus_per_node)} or lower tp/pp",
        )


@rule
def pipeline_excludes_mtp(s: Settings) -> Iterator[Problem]:
    if s.parallelism.pp > 1 and s.speculative.enabled:
        yield Problem(
            "speculative.enabled",
            "pipeline parallel (parallelism.pp > 1) cannot run speculative decoding; set speculative.enabled=false "
            "or parallelism.pp=1 (overlap scheduling is turned off automatically under pp)",
        )


@rule
def no_dp_across_nodes(s: Settings) -> Iterator[Problem]:
    if s.parallelism.dp > 1 and s.parallelism.nodes > 1:
        yield Problem(
            "parallelism.dp",
            "dp > 1 across nodes is refused by SGLang; run one replica per node (autoscaling.max_replicas) instead",
        )


@rule
def served_name_plain(s: Settings) -> Iterator[Problem]:
    name = s.model.served_name or ""
    if ":" in name:
        yield Problem("model.served_name", f"{name!r} contains ':'; use e.g. {name.replace(':', '-')!r}")
    if not name.strip():
        yield Problem("model.served_name", "must not be empty")


@rule
def context_within_model(s: Settings) -> Iterator[Problem]:
    limit = s.preset.max_context
    if s.resolved_context_length > limit and not s.model.allow_long_context:
        yield Problem(
            "context_length",
            f"{s.resolved_context_length} exceeds {s.model.preset}'s native {limit}; lower it or set "
            "model.allow_long_context=true (with a RoPE scaling override in engine.extra_args)",
        )


@rule
def speculative_draft_shape(s: Settings) -> Iterator[Problem]:
    if (
        s.speculative.enabled
        and s.speculative.eagle_topk == 1
        and (s.speculative.num_draft_tokens != s.speculative.num_steps + 1)
    ):
        yield Problem(
            "speculative.num_draft_tokens",
            f"with eagle_topk=1 it must be num_steps + 1 = {s.speculative.num_steps + 1}",
        )


@rule
def gpus_available(s: Settings) -> Iterator[Problem]:
    p = s.parallelism
    if s.engine.kind.reserves_gpus and p.gpus_per_instance > p.gpus_per_node * p.nodes:
        yield Problem(
            "parallelism.tp",
            f"tp × pp × dp = {p.gpus_per_instance} GPUs exceeds the {p.gpus_per_node * p.nodes} available "
            f"({p.nodes} node(s) × {p.gpus_per_node}); lower tp/pp or add nodes",
        )


@rule
def cpu_engine_on_cpu(s: Settings) -> Iterator[Problem]:
    if s.engine.kind == EngineKind.LLAMACPP and (s.parallelism.tp, s.parallelism.pp, s.parallelism.nodes) != (1, 1, 1):
        yield Problem("parallelism.tp", "llama.cpp runs one process on one node: set tp=1, pp=1, nodes=1")
    if s.engine.kind == EngineKind.LLAMACPP and not s.preset.is_gguf and not str(s.model.path).endswith(".gguf"):
        yield Problem("model.path", "llama.cpp needs a .gguf file; point model.path at one")
    if s.engine.kind in (EngineKind.SGLANG, EngineKind.VLLM) and s.preset.is_gguf:
        yield Problem("model.preset", f"{s.model.preset} is a local GGUF model; use engine.kind=llamacpp")


@rule
def autoscaling_bounds(s: Settings) -> Iterator[Problem]:
    a = s.autoscaling
    if a.min_replicas > a.max_replicas:
        yield Problem("autoscaling.min_replicas", f"{a.min_replicas} is above max_replicas={a.max_replicas}")
    if a.initial_replicas is not None and not a.min_replicas <= a.initial_replicas <= a.max_replicas:
        yield Problem("autoscaling.initial_replicas", f"must lie in [{a.min_replicas}, {a.max_replicas}]")


def settings_fit(s: Settings, *, running: int | None, tp: int | None = None, **kw: object) -> MemoryFit:
    """The memory fit of these settings (optionally at another TP, or with other memory fields)."""
    p, m = s.parallelism, s.memory
    args: dict[str, object] = {
        "kv_tokens_per_request": m.kv_tokens_per_request,
        "reserve_full_context": m.reserve_full_context,
        "ssm_dtype": m.mamba_ssm_dtype,
        "kv_cache_dtype": s.model.kv_cache_dtype,
    }
    args.update(kw)
    return memory_fit(
        s.preset,
        gpu_type=p.gpu_type,
        tp=p.tp if tp is None else tp,
        pp=p.pp,
        mem_fraction=m.mem_fraction,
        context_length=s.resolved_context_length,
        running=running,
        quantization=s.model.quantization,
        draft_tokens=s.speculative.num_draft_tokens if s.speculative.enabled else None,
        radix_cache_strategy=m.radix_cache_strategy,
        **args,  # type: ignore[arg-type]
    )


@rule
def memory_fits(s: Settings) -> Iterator[Problem]:
    if not s.engine.kind.reserves_gpus or s.preset.is_gguf:
        return
    p, m = s.parallelism, s.memory
    if s.preset.attention_heads % p.tp:
        return  # reported by tp_divides_heads
    ctx = s.resolved_context_length
    fit = settings_fit(s, running=m.max_running_requests)
    if fit.fits:
        return
    cap, gpu = fit.cap, GPU_PROFILES[p.gpu_type]
    asked = m.max_running_requests
    mode = (
        f"reserving {fit.reserve_tokens} KV tokens per running request (no retraction)"
        if fit.reserve_tokens is not None
        else "SGLang's pool admission (retraction under KV pressure)"
    )
    msg = (
        f"{s.model.preset} at tp={p.tp}, pp={p.pp} on {gpu.name}: mem_fraction {m.mem_fraction} leaves "
        f"{cap.budget_bytes / GIB:.1f} GiB per GPU; weights take {cap.weights_bytes / GIB:.1f} GiB, the state pool "
        f"{cap.state_pool_bytes / GIB:.1f} GiB ({cap.state_slots} slots of {cap.state_bytes / GIB * 1024:.0f} MiB, "
        f"{cap.slots_per_request} per running request: ≤ {cap.state_bound if cap.state_bytes else 'any'} running), "
        f"the KV pool {cap.kv_pool_tokens} tokens ({cap.kv_pool_tokens * cap.kv_bytes_per_token / GIB:.1f} GiB). "
        f"With {mode} at context {ctx}, {fit.max_running} can run" + (f"; {asked} asked." if asked is not None else ".")
    )
    hints = []
    if fit.max_running >= 1:
        hints.append(f"memory.max_running_requests ≤ {fit.max_running}")
    if fit.reserve_tokens is not None:
        pool_mode = settings_fit(s, running=None, kv_tokens_per_request=None, reserve_full_context=False)
        if pool_mode.max_running >= 1:
            hints.append(
                f"memory.reserve_full_context=false and kv_tokens_per_request unset (the default): up to "
                f"{pool_mode.max_running} running in the {pool_mode.cap.kv_pool_tokens}-token pool, retraction possible"
            )
        tokens = kv_tokens_that_fit(fit)
        if tokens >= 1024:
            hints.append(f"memory.kv_tokens_per_request ≤ {tokens} ({max(fit.running, 1)} running each reserving that)")
    for tp in s.preset.tp_choices:
        possible = tp > p.tp and tp * p.pp <= p.gpus_per_node * p.nodes
        if possible and settings_fit(s, running=asked, tp=tp).fits:
            hints.append(f"parallelism.tp={tp}")
            break
    if m.mamba_ssm_dtype == "float32" and cap.state_bytes:
        hints.append("memory.mamba_ssm_dtype=bfloat16 (halves the state: about twice the slots)")
    if s.model.kv_cache_dtype == "auto":
        hints.append("model.kv_cache_dtype=fp8_e4m3 (halves KV: twice the pool's tokens)")
    yield Problem("memory.max_running_requests", msg + " Would fit: " + ("; ".join(hints) or "a larger GPU type"))


def problems(s: Settings) -> list[Problem]:
    return [p for r in RULES for p in r(s)]


def validate(s: Settings) -> Settings:
    found = problems(s)
    if found:
        raise ConfigError(found)
    return s


def resolved_max_running(s: Settings) -> int:
    """The explicit --max-running-requests for the engine: the setting, else what SGLang's pools
    admit while each running request keeps ``memory.kv_share_tokens`` of the pool on average
    (:func:`serving.capacity.default_max_running`), or with
    ``reserve_full_context`` / ``kv_tokens_per_request`` the most that fit at that reservation."""
    if s.memory.max_running_requests is not None:
        return s.memory.max_running_requests
    if s.preset.is_gguf or s.engine.kind == EngineKind.LLAMACPP:
        return 4
    fit = settings_fit(s, running=None)
    if fit.reserve_tokens is not None:
        return max(1, min(fit.max_running, DEFAULT_MAX_RUNNING_CAP))
    return default_max_running(fit.layout, min(s.memory.kv_share_tokens, s.resolved_context_length))
