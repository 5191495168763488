"""The simulator's launch plan: SGLang's exact argv, a different program, plus ``--sim-*`` knobs."""

from __future__ import annotations

import sys
from typing import ClassVar

from serving.config.settings import EngineKind, Settings, SimulatorSettings
from serving.engines.sglang import SGLangEngine
from serving.engines.simulator.args import sim_flag


def sim_args(s: Settings) -> list[str]:
    """``--sim-gpu``/``--sim-preset`` from the parallelism and model sections, then one flag per
    :class:`SimulatorSettings` field that is set (a true bool as a bare flag; None and False left out)."""
    a = ["--sim-gpu", s.parallelism.gpu_type.value, "--sim-preset", s.model.preset]
    sim = s.engine.simulator
    for name in SimulatorSettings.model_fields:
        value = getattr(sim, name)
        if value is None or value is False:
            continue
        a += [sim_flag(name)] if value is True else [sim_flag(name), str(value)]
    return a


class SimulatorEngine(SGLangEngine):
    """Speaks SGLang's command line and HTTP API; runs on CPU with a GPU timing model."""

    kind: ClassVar[EngineKind] = EngineKind.SIMULATOR

    def program_argv(self, s: Settings) -> list[str]:
        return [s.engine.binary] if s.engine.binary else [sys.executable, "-m", "serving.engines.simulator"]

    def extra_args(self, s: Settings) -> list[str]:
        return sim_args(s)
