"""llama.cpp's `llama-server`: the local CPU engine and the embedded default."""

from __future__ import annotations

import os
from typing import ClassVar

from serving.config.settings import EngineKind, Settings
from serving.config.validation import resolved_max_running
from serving.engines.base import Engine, LaunchPlan, RankPlan

# The program, found on PATH unless engine.binary names it. Installed code knows no checkout: the
# CPU image links the build into /usr/local/bin; `make serve` puts a checkout's build on PATH.
PROGRAM = "llama-server"


class LlamaCppEngine(Engine):
    kind: ClassVar[EngineKind] = EngineKind.LLAMACPP
    # A non-streamed request's HTTP thread looks at its connection only when its 1 s wait for a
    # result times out, and any other result the server sends (another request's token, a /metrics
    # answer) wakes that wait first: under traffic, a client that left keeps its slot to the last
    # token. A stream checks its connection before every chunk (measured on b11434: 18.9 s busy
    # vs freed within 1 s; docs/reliability.md).
    abort_needs_stream = True
    running_metric = "llamacpp:requests_processing"
    queued_metric = "llamacpp:requests_deferred"
    install_hint = (
        "in a checkout `make llama-server` builds .cache/llama.cpp/bin/llama-server and `make serve` uses it; "
        "the CPU image ships it"
    )

    def binary(self, s: Settings) -> str:
        return s.engine.binary or PROGRAM

    def plan(self, s: Settings, *, host: str, port: int, dist_init_addr: str | None = None) -> LaunchPlan:
        slots = resolved_max_running(s)
        argv = [
            self.binary(s),
            "--model", str(s.model.path),
            "--alias", str(s.model.served_name),
            "--host", host,
            "--port", str(port),
            # -c is the total context shared by the -np slots: give each slot the configured length.
            "--ctx-size", str(s.resolved_context_length * slots),
            "--parallel", str(slots),
            "--threads", str(s.engine.threads or os.cpu_count() or 1),
            "--metrics",
            "--jinja",
            "--reasoning-format", "deepseek",  # <think> text → reasoning_content
            "--no-webui",
        ]  # fmt: skip
        env = dict(s.engine.env)
        if s.engine.api_key is not None:
            env["LLAMA_API_KEY"] = s.engine.api_key.get_secret_value()  # env, never argv
        argv += list(s.engine.extra_args)
        return LaunchPlan(self.kind.value, host, port, [RankPlan(0, argv, env, True)], 0)
