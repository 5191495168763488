"""SGLang-compatible engine simulator: same argv, same HTTP routes and JSON shapes, a GPU timing
model of continuous batching, and fault knobs. ``python -m serving.engines.simulator <argv>``."""

from serving.engines.simulator.plan import SimulatorEngine

__all__ = ["SimulatorEngine"]
