"""Where one engine instance runs: its placement-group bundles and the GPUs each rank sees.

One bundle per node rank: ``{"CPU": c, "GPU": g}``. One node packs strictly (STRICT_PACK); several
nodes spread strictly (STRICT_SPREAD), so rank ``i`` lands in bundle ``i`` on its own node. The
replica actor itself is pinned by Ray Serve to bundle 0 and runs rank 0; ranks ≥ 1 are Ray actors
pinned to bundles 1 … n-1. All pure functions of settings (no Ray import) so they unit-test cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serving.config.settings import Settings


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


def placement(s: Settings) -> Placement:
    p = s.parallelism
    gpus = p.gpus_per_rank if s.uses_gpus else 0
    bundle: dict[str, float] = {"CPU": p.cpus_per_rank}
    if gpus:
        bundle["GPU"] = float(gpus)
    strategy = "STRICT_PACK" if p.nodes == 1 else "STRICT_SPREAD"
    return Placement([dict(bundle) for _ in range(p.nodes)], strategy, p.cpus_per_rank, gpus)


def cuda_visible_devices(gpu_ids: Sequence[int | str]) -> dict[str, str]:
    """The engine process sees exactly the GPUs Ray assigned to its actor (empty: none)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpu_ids)} if gpu_ids else {}


def unschedulable(s: Settings, nodes: Sequence[Mapping[str, float]], *, extra_cpus: float = 0.0) -> list[str]:
    """Why one engine replica (plus ``extra_cpus`` for the gateway) can never be placed on a cluster
    whose alive nodes have these total resources; empty when it fits. Each reason names what is
    missing and the setting that fixes it."""
    pl = placement(s)
    bundle = pl.bundles[0]
    fits = [n for n in nodes if all(n.get(k, 0.0) >= v for k, v in bundle.items())]
    problems: list[str] = []
    if len(fits) < pl.nodes:
        best = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        have = {k: best.get(k, 0.0) for k in bundle}
        short = ", ".join(f"{k} {v:g} (a node has at most {have[k]:g})" for k, v in bundle.items() if have[k] < v)
        where = "one node" if pl.nodes == 1 else f"each of {pl.nodes} nodes"
        if short:
            problems.append(f"an engine replica needs {_fmt(bundle)} on {where}; missing {short}. {_fix(bundle, have)}")
        else:
            problems.append(
                f"parallelism.nodes: an engine replica spans {pl.nodes} nodes with {_fmt(bundle)} each, but only "
                f"{len(fits)} of the cluster's {len(nodes)} node(s) fit one. Set parallelism.nodes=1, or point "
                "ray.address at a cluster with enough nodes."
            )
    cpus = sum(n.get("CPU", 0.0) for n in nodes)
    need = pl.cpus_per_rank * pl.nodes + extra_cpus
    if not problems and cpus < need:
        problems.append(
            f"parallelism.cpus_per_rank: one engine replica ({pl.cpus_per_rank:g} CPU per rank) plus the gateway "
            f"({extra_cpus:g} CPU) need {need:g} CPUs; the cluster has {cpus:g}. Lower parallelism.cpus_per_rank "
            "or gateway.replicas."
        )
    return problems


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"


def _fix(bundle: Mapping[str, float], have: Mapping[str, float]) -> str:
    if bundle.get("GPU", 0.0) > have.get("GPU", 0.0):
        if have.get("GPU", 0.0) >= 1:
            return f"Lower parallelism.tp / pp / dp to fit {have['GPU']:g} GPU(s) per node."
        return (
            "This cluster has no GPUs: use engine.kind=llamacpp (CPU), engine.kind=simulator (emulated GPUs), "
            "or point ray.address at a cluster with GPUs."
        )
    return f"Set parallelism.cpus_per_rank ≤ {have.get('CPU', 0.0):g}."
