"""What a run directory holds besides its records: the levels, their windows and GPU samples.

Kept apart from :mod:`loadtest.runner` so reports can be rebuilt without importing Locust (and its
gevent monkey-patching).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORDS = "records.jsonl"
RUN_META = "run.json"


@dataclass
class LevelWindow:
    load: float
    start_ts: float  # Unix time the measured window opened (after warm-up)
    window_s: float
    users: int
    gpu_samples: list[tuple[float, int]] = field(default_factory=list)  # (unix time, GPUs)
    replicas: int = 0
    gpu_type: str = ""


@dataclass
class RunMeta:
    mode: str
    scenario: str
    host: str
    model: str
    levels: list[LevelWindow]
    warmup_s: float
    duration_s: float
    started: float
    finished: float = 0.0
    gpu_source: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> RunMeta:
        d = json.loads(path.read_text(encoding="utf-8"))
        d["levels"] = [
            LevelWindow(**{**lv, "gpu_samples": [tuple(x) for x in lv["gpu_samples"]]}) for lv in d["levels"]
        ]
        return cls(**d)
