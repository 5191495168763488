"""One record per request, one JSON line per record: the raw material of exact percentiles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any


@dataclass
class RequestRecord:
    """What one streamed request measured. Times are seconds; ``start_ts`` is the Unix time."""

    start_ts: float
    scenario: str
    load: float  # the sweep point this request belongs to (concurrency or requests/s)
    status: int  # HTTP status (0: no response)
    ok: bool
    e2e_s: float
    ttft_s: float | None = None  # first content *or* reasoning token
    ttfa_s: float | None = None  # time to first answer token: first delta.content (not reasoning)
    tpot_s: float | None = None  # (e2e − ttft) / (completion_tokens − 1)
    itl_s: list[float] = field(default_factory=list)  # gaps between token-bearing chunks
    prompt_tokens: int = 0
    completion_tokens: int = 0  # from the server's usage; counted events when it sends none
    reasoning_tokens: int = 0  # thinking tokens (see reasoning_tokens_source)
    answer_tokens: int = 0  # completion_tokens − reasoning_tokens
    reasoning_tokens_source: str = ""  # usage (server's completion_tokens_details) | deltas | chars
    events: int = 0  # token-bearing SSE events received
    reasoning_events: int = 0  # of which carried reasoning text
    answer_events: int = 0  # of which carried content
    thinking: bool = False
    reasoning_tokens_hint: int | None = None  # the reasoning length asked of the server, if any
    images: int = 0  # images sent in the request
    image_tokens_expected: int = 0  # Σ ceil(w/32)·ceil(h/32): patch 16 × spatial merge 2
    usage_reported: bool = False
    cached_tokens: int | None = None
    error: str | None = None
    warmup: bool = False
    pacer_lag_s: float | None = None  # open loop: actual send time − scheduled arrival
    worker: str = ""

    def to_line(self) -> str:
        d = asdict(self)
        d["itl_s"] = [round(x, 6) for x in self.itl_s]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class JsonlWriter:
    """Appends records to a file, one JSON line each. Call :meth:`close` when the run ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, record: RequestRecord) -> None:
        if self._fh is not None:
            self._fh.write(record.to_line() + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(path: Path) -> Iterator[RequestRecord]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield RequestRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a request record ({exc})") from None
