"""The simulator's launch plan: SGLang's exact argv, a different program, plus ``--sim-*`` knobs."""

from __future__ import annotations

import sys
from typing import ClassVar

from serving.config.settings import EngineKind, Settings
from serving.engines.sglang import SGLangEngine


def sim_args(s: Settings) -> list[str]:
    sim = s.engine.simulator
    a = ["--sim-gpu", s.parallelism.gpu_type.value, "--sim-preset", s.model.preset]
    a += ["--sim-time-scale", str(sim.time_scale), "--sim-default-output-tokens", str(sim.default_output_tokens)]
    a += ["--sim-mtp-accept-length", str(sim.mtp_accept_length)]
    if sim.zero_delay:
        a.append("--sim-zero-delay")
    if sim.fixed_ttft_s is not None:
        a += ["--sim-fixed-ttft-s", str(sim.fixed_ttft_s)]
    if sim.fixed_tpot_s is not None:
        a += ["--sim-fixed-tpot-s", str(sim.fixed_tpot_s)]
    if sim.crash_after_tokens is not None:
        a += ["--sim-crash-after-tokens", str(sim.crash_after_tokens)]
    if sim.hang_after_s is not None:
        a += ["--sim-hang-after-s", str(sim.hang_after_s)]
    if sim.slow_start_s:
        a += ["--sim-slow-start-s", str(sim.slow_start_s)]
    if sim.fail_health:
        a.append("--sim-fail-health")
    return a


class SimulatorEngine(SGLangEngine):
    """Speaks SGLang's command line and HTTP API; runs on CPU with a GPU timing model."""

    kind: ClassVar[EngineKind] = EngineKind.SIMULATOR

    def program_argv(self, s: Settings) -> list[str]:
        return [s.engine.binary] if s.engine.binary else [sys.executable, "-m", "serving.engines.simulator"]

    def extra_args(self, s: Settings) -> list[str]:
        return sim_args(s)
