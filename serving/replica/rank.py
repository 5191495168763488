"""Ranks ≥ 1 of a multi-node engine instance: one Ray actor per extra node bundle.

The actor holds the bundle's GPUs (so Ray assigns it GPU ids and isolates them from other
replicas), starts that rank's engine process with ``CUDA_VISIBLE_DEVICES`` set to those ids, and
answers liveness probes. It is owned by the replica actor: when the replica dies Ray kills it, and
the engine process follows through ``PR_SET_PDEATHSIG`` (see :mod:`serving.replica.process`).
Methods run on the actor's main thread (``max_concurrency=1``), the thread that forked the engine,
which lives as long as the actor process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from serving.observability.logging import configure_logging
from serving.replica.placement import cuda_visible_devices
from serving.replica.process import EngineProcess


@dataclass(frozen=True)
class RankInfo:
    rank: int
    node_id: str
    node_ip: str
    gpu_ids: list[str]
    pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # what we set on top of the actor's environment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def where_am_i() -> tuple[str, str, list[str]]:
    """(node id, node ip, assigned GPU ids) of the calling Ray worker."""
    import ray

    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ray.util.get_node_ip_address(), [str(g) for g in ray.get_gpu_ids()]


class RankWorker:
    """Plain class; :func:`rank_worker_cls` makes it a Ray actor. Testable without Ray."""

    def __init__(self, rank: int, replica_id: str, log_level: str = "INFO", log_json: bool = True, engine: str = ""):
        configure_logging(log_level, json_logs=log_json)
        self.rank = rank
        self.engine = engine
        self.replica_id = replica_id
        self._proc: EngineProcess | None = None
        self._env: dict[str, str] = {}

    def info(self) -> dict[str, Any]:
        node_id, node_ip, gpus = where_am_i()
        pid = self._proc.pid if self._proc else None
        return RankInfo(self.rank, node_id, node_ip, gpus, pid, self._env).to_dict()

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
        _, _, gpus = where_am_i()
        self._env = {**env, **cuda_visible_devices(gpus)}
        self._proc = EngineProcess(argv, self._env, rank=self.rank, replica_id=self.replica_id, engine=self.engine)
        self._proc.start()
        return self.info()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def exit_report(self) -> str:
        if self._proc is None:
            return f"engine {self.engine} rank {self.rank} was never started"
        return self._proc.failure("exited").render()

    def stop(self, grace_s: float) -> int | None:
        return self._proc.stop(grace_s) if self._proc else None


def rank_worker_cls() -> Any:
    import ray

    # No restarts: a lost rank means the whole instance is replaced by Serve.
    return ray.remote(max_restarts=0, max_concurrency=1)(RankWorker)  # type: ignore[call-overload]
