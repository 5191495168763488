"""SGLang 0.5.23 (`python -m sglang.launch_server`): the default GPU engine."""

from __future__ import annotations

from typing import ClassVar

from serving.config.settings import EngineKind, Settings
from serving.config.validation import resolved_max_running
from serving.engines.base import Engine, LaunchPlan, RankPlan


def sglang_args(s: Settings, *, host: str, port: int) -> list[str]:
    """Every option of one SGLang instance except the per-rank multi-node ones."""
    p, m, spec = s.parallelism, s.memory, s.preset
    a = ["--model-path", str(s.model.path)]
    if s.model.revision:
        a += ["--revision", s.model.revision]
    a += ["--served-model-name", str(s.model.served_name), "--host", host, "--port", str(port)]
    a += ["--tp-size", str(p.tp)]
    if p.pp > 1:
        a += ["--pp-size", str(p.pp), "--disable-overlap-schedule"]
    if p.dp > 1:
        a += ["--dp-size", str(p.dp)]
    a += ["--context-length", str(s.resolved_context_length)]
    if s.model.dtype != "auto":
        a += ["--dtype", s.model.dtype]
    if s.model.quantization and s.model.quantization != spec.quantization:
        a += ["--quantization", s.model.quantization]  # pre-quantized checkpoints are auto-detected
    if s.model.kv_cache_dtype != "auto":
        a += ["--kv-cache-dtype", s.model.kv_cache_dtype]
    if s.reasoning.parser:
        a += ["--reasoning-parser", s.reasoning.parser]
    if s.tools.parser:
        a += ["--tool-call-parser", s.tools.parser]
    if s.speculative.enabled:
        sp = s.speculative
        a += [
            "--speculative-algorithm", sp.algorithm,
            "--speculative-num-steps", str(sp.num_steps),
            "--speculative-eagle-topk", str(sp.eagle_topk),
            "--speculative-num-draft-tokens", str(sp.num_draft_tokens),
        ]  # fmt: skip
    # Explicit: with speculative decoding on, SGLang otherwise silently caps it at 48.
    a += ["--max-running-requests", str(resolved_max_running(s))]
    a += ["--mem-fraction-static", str(m.mem_fraction)]
    if spec.hybrid_attention:
        a += ["--mamba-radix-cache-strategy", m.radix_cache_strategy, "--mamba-ssm-dtype", m.mamba_ssm_dtype]
    if m.chunked_prefill_size is not None:
        a += ["--chunked-prefill-size", str(m.chunked_prefill_size)]
    if m.cuda_graph_max_bs_decode is not None:
        a += ["--cuda-graph-max-bs-decode", str(m.cuda_graph_max_bs_decode)]
    a += ["--enable-metrics", "--enable-cache-report", "--watchdog-timeout", str(s.engine.watchdog_timeout_s)]
    if s.telemetry.otlp_endpoint:
        a += ["--enable-trace", "--otlp-traces-endpoint", s.telemetry.otlp_endpoint]
    if s.engine.api_key is not None:
        # SGLang takes its key only on argv (no env or file form): visible in the process table of
        # the pod, which only the engine's own container shares. The NetworkPolicy is the first line.
        a += ["--api-key", s.engine.api_key.get_secret_value()]
    return a


class SGLangEngine(Engine):
    kind: ClassVar[EngineKind] = EngineKind.SGLANG
    running_metric = "sglang:num_running_reqs"
    queued_metric = "sglang:num_queue_reqs"
    health_generates = True  # SGLang's /health runs a 1-token generation through the scheduler
    program: ClassVar[list[str]] = ["python", "-m", "sglang.launch_server"]
    install_hint = "pip install 'qwen-serve[sglang]', or use the GPU image"

    def program_argv(self, s: Settings) -> list[str]:
        return [s.engine.binary] if s.engine.binary else list(self.program)

    def extra_args(self, s: Settings) -> list[str]:
        return []

    def plan(self, s: Settings, *, host: str, port: int, dist_init_addr: str | None = None) -> LaunchPlan:
        self.require_dist_addr(s, dist_init_addr)
        base = self.program_argv(s) + sglang_args(s, host=host, port=port)
        nodes = s.parallelism.nodes
        ranks = []
        for r in range(nodes):
            argv = list(base)
            if nodes > 1:
                argv += ["--nnodes", str(nodes), "--node-rank", str(r), "--dist-init-addr", str(dist_init_addr)]
            argv += self.extra_args(s) + list(s.engine.extra_args)
            ranks.append(RankPlan(rank=r, argv=argv, env=dict(s.engine.env), serves_http=r == 0))
        notes = []
        if s.engine.api_key is not None:
            notes.append("SGLang reads --api-key from argv only; it is redacted in printed plans.")
        return LaunchPlan(self.kind.value, host, port, ranks, s.parallelism.gpus_per_rank, notes)
