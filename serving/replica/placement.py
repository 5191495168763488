"""Where one engine instance runs: its placement-group bundles and the GPUs each rank sees.

One bundle per node rank: ``{"CPU": c, "GPU": g}``. One node packs strictly (STRICT_PACK); several
nodes spread strictly (STRICT_SPREAD), so rank ``i`` lands in bundle ``i`` on its own node. The
replica actor itself is pinned by Ray Serve to bundle 0 and runs rank 0; ranks ≥ 1 are Ray actors
pinned to bundles 1 … n-1. All pure functions of settings (no Ray import) so they unit-test cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serving.config.hardware import GpuType
from serving.config.settings import Settings
from serving.config.validation import GPU_ENGINES


@dataclass(frozen=True)
class Placement:
    bundles: list[dict[str, float]]
    strategy: str  # STRICT_PACK | STRICT_SPREAD
    cpus_per_rank: float
    gpus_per_rank: int

    @property
    def nodes(self) -> int:
        return len(self.bundles)

    def actor_resources(self) -> dict[str, float]:
        """``num_cpus`` / ``num_gpus`` of the actor holding one bundle (replica or rank worker)."""
        return {"num_cpus": self.cpus_per_rank, "num_gpus": float(self.gpus_per_rank)}


def uses_gpus(s: Settings) -> bool:
    """GPU engines reserve GPUs unless the settings say the "GPU" is the CPU (llama.cpp, laptops)."""
    return s.engine.kind in GPU_ENGINES and s.parallelism.gpu_type != GpuType.CPU


def placement(s: Settings) -> Placement:
    p = s.parallelism
    gpus = p.gpus_per_rank if uses_gpus(s) else 0
    bundle: dict[str, float] = {"CPU": p.cpus_per_rank}
    if gpus:
        bundle["GPU"] = float(gpus)
    strategy = "STRICT_PACK" if p.nodes == 1 else "STRICT_SPREAD"
    return Placement([dict(bundle) for _ in range(p.nodes)], strategy, p.cpus_per_rank, gpus)


def cuda_visible_devices(gpu_ids: Sequence[int | str]) -> dict[str, str]:
    """The engine process sees exactly the GPUs Ray assigned to its actor (empty: none)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpu_ids)} if gpu_ids else {}
