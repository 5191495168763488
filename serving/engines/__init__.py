"""Engines behind one interface (:class:`serving.engines.base.Engine`), looked up by kind."""

from __future__ import annotations

from serving.config.settings import EngineKind, Settings
from serving.engines.base import Engine, EngineLoad, LaunchPlan, RankPlan
from serving.engines.llamacpp import LlamaCppEngine
from serving.engines.sglang import SGLangEngine
from serving.engines.simulator import SimulatorEngine
from serving.engines.vllm import VLLMEngine

ENGINES: dict[EngineKind, Engine] = {
    e.kind: e for e in (SGLangEngine(), VLLMEngine(), LlamaCppEngine(), SimulatorEngine())
}


def get_engine(kind: EngineKind | str) -> Engine:
    return ENGINES[EngineKind(kind)]


def plan_instance(
    s: Settings, *, host: str = "0.0.0.0", port: int | None = None, dist_init_addr: str | None = None
) -> LaunchPlan:
    """The launch plan of one engine instance for these settings (pure)."""
    return get_engine(s.engine.kind).plan(
        s, host=host, port=s.engine.port if port is None else port, dist_init_addr=dist_init_addr
    )


__all__ = ["ENGINES", "Engine", "EngineLoad", "LaunchPlan", "RankPlan", "get_engine", "plan_instance"]
