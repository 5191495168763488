"""The engine contract. Every engine kind implements :class:`Engine`; only its own module knows
its command line, endpoints and metric names.

Contract:
- ``plan(settings, host=, port=, dist_init_addr=)`` is pure: the exact argv + environment for each
  node rank of one engine instance. Rank 0 serves HTTP; ranks ≥ 1 join it.
- The engine, once started, serves the OpenAI routes ``/v1/chat/completions``, ``/v1/completions``
  and ``/v1/models`` on rank 0 (SSE ``data: {...}`` lines when streaming, one JSON object otherwise,
  an OpenAI-shaped ``{"error": {...}}`` body with a 4xx/5xx status on failure).
- ``health_path`` answers 200 while the engine is up; when ``health_generates`` is true it also
  proves the engine can generate (SGLang's runs a 1-token generation), otherwise the replica's health
  check adds a 1-token ``/v1/completions`` of its own (rate-limited by
  ``replica.health_generate_interval_s``). ``metrics_path`` serves Prometheus text from which
  ``parse_load`` reads running and queued requests.
- ``missing_program`` says, before a start, when rank 0's program is not there and how to get it
  (``install_hint``).
- ``reasoning_field`` is the name the engine gives reasoning text; the gateway renames it to
  ``reasoning_content`` when it differs.
- Closing the connection of a running request aborts it. ``abort_needs_stream`` true means the
  engine notices only while it streams; the gateway then asks it for a stream even for a client
  that wants one JSON answer, and assembles that answer itself (``serving.gateway.assemble``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from serving.config.settings import EngineKind, Settings


@dataclass(frozen=True)
class RankPlan:
    rank: int
    argv: list[str]
    env: dict[str, str]
    serves_http: bool

    def shell(self) -> str:
        """One shell line for humans, secrets redacted."""
        env = " ".join(f"{k}={'**********' if _secret_env(k) else shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(redact_argv(self.argv))


@dataclass(frozen=True)
class LaunchPlan:
    engine: str
    host: str
    port: int
    ranks: list[RankPlan]
    gpus_per_rank: int
    notes: list[str] = field(default_factory=list)

    def to_json(self, *, redact: bool = True) -> str:
        data = asdict(self)
        if redact:
            for r in data["ranks"]:
                r["argv"] = redact_argv(r["argv"])
                r["env"] = {k: ("**********" if _secret_env(k) else v) for k, v in r["env"].items()}
        return json.dumps(data, indent=2)


_SECRET_FLAGS = {"--api-key", "--admin-api-key"}


def _secret_env(name: str) -> bool:
    return bool(re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", name))


def redact_argv(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in _SECRET_FLAGS:
            out[i + 1] = "**********"
    return out


@dataclass(frozen=True)
class EngineLoad:
    running: float
    queued: float

    @property
    def total(self) -> float:
        return self.running + self.queued


def prom_values(text: str, names: Iterable[str]) -> dict[str, float]:
    """Sum every sample of each of ``names`` (any labels) in Prometheus exposition text; 0 if absent.
    Only those samples' lines are handed to the parser: an engine's exposition is mostly histogram
    buckets nobody here reads, and the replica reads its load every few seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(names, 0.0)
    prefixes = tuple(out)
    lines = [
        line
        for line in text.splitlines()
        if line.startswith(prefixes) and line.partition("{")[0].partition(" ")[0] in out
    ]
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return out


def prom_value(text: str, name: str) -> float:
    """Sum every sample named ``name`` (any labels) in Prometheus exposition text; 0 if absent."""
    return prom_values(text, (name,))[name]


class Engine(ABC):
    kind: ClassVar[EngineKind]
    reasoning_field: ClassVar[str] = "reasoning_content"
    abort_needs_stream: ClassVar[bool] = False
    health_path: ClassVar[str] = "/health"
    health_generates: ClassVar[bool] = False
    metrics_path: ClassVar[str] = "/metrics"
    running_metric: ClassVar[str]
    queued_metric: ClassVar[str]
    # How to get the engine program when it is missing (the tail of the error naming engine.binary).
    install_hint: ClassVar[str] = "install the engine"

    def missing_program(self, plan: LaunchPlan) -> str | None:
        """Why rank 0's program cannot start here (not a file, not on PATH), naming the fix; None if found."""
        program = plan.ranks[0].argv[0]
        if shutil.which(program):
            return None
        return (
            f"engine.binary: {program!r} is not an executable file or a program on PATH; set engine.binary "
            f"(QWEN_SERVE_ENGINE__BINARY) to its path, or put it on PATH ({self.install_hint})"
        )

    @abstractmethod
    def plan(self, s: Settings, *, host: str, port: int, dist_init_addr: str | None = None) -> LaunchPlan:
        """Exact argv + env for every rank of one instance (see the module docstring)."""

    def parse_load(self, metrics_text: str) -> EngineLoad:
        found = prom_values(metrics_text, (self.running_metric, self.queued_metric))
        return EngineLoad(found[self.running_metric], found[self.queued_metric])

    @staticmethod
    def require_dist_addr(s: Settings, dist_init_addr: str | None) -> None:
        if s.parallelism.nodes > 1 and not dist_init_addr:
            raise ValueError("dist_init_addr: a multi-node plan needs rank 0's host:port (--dist-init-addr)")
