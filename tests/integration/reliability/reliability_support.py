"""Helpers of the reliability and security integration tests: the whole stack (gateway ingress +
simulated engine replicas) on a private Ray cluster, an SSE client that classifies how every
stream ended, polling with deadlines, and a recorder for the measured recovery times."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.config import Settings, load_settings

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

GPUS_PER_NODE = 4
KEY = "sk-reliability-0123456789abcdef"  # grepped for in every log of the run afterwards
OTHER_KEY = "sk-reliability-second-key-fedcba98"
WRONG_KEY = "sk-wrong-key-never-valid-777777"
ENGINE_KEY = "engine-secret-55555555"
SECRETS = (KEY, OTHER_KEY, WRONG_KEY)
RESULTS_ENV = "QWEN_SERVE_RELIABILITY_OUT"  # a JSON file the fault matrix writes its timings to


def poll(pred: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2, what: str = "") -> Any:
    """Call ``pred`` until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as e:  # the system is in flux while it recovers
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval_s)
    pytest.fail(f"{what or 'condition'} not met within {timeout_s}s (last: {last!r})")


def stack_settings(name: str, **over: Any) -> Settings:
    """A simulated Qwen3.6-27B (TP=2 on declared GPUs) behind the gateway; the model is served
    as ``name`` so that every test's engines are told apart in the shared registry."""
    base: dict[str, Any] = {
        "model": {"preset": "qwen3.6-27b", "served_name": name},
        "engine": {
            "kind": "simulator",
            "port": 0,
            "api_key": ENGINE_KEY,
            "simulator": {"fixed_ttft_s": 0.02, "fixed_tpot_s": 0.02, "default_output_tokens": 8},
        },
        "parallelism": {"tp": 2, "gpus_per_node": GPUS_PER_NODE, "cpus_per_rank": 0.1},
        "replica": {
            "startup_timeout_s": 60,
            "health_check_period_s": 1,
            "health_check_timeout_s": 2,
            "drain_grace_s": 1,
        },
        "autoscaling": {"min_replicas": 1, "max_replicas": 1, "metrics_interval_s": 0.5, "look_back_period_s": 2},
        "gateway": {"api_keys": {"keys": [KEY, OTHER_KEY], "required": True}},
        "telemetry": {"log_level": "DEBUG"},  # the most a log can say: the key must still be absent
    }
    for section, values in over.items():
        merged = dict(base.get(section, {}))
        for k, v in values.items():
            merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        base[section] = merged
    return load_settings(overrides=base, env={})


@dataclass
class StreamResult:
    """How one streamed request ended, as a client sees it."""

    status: int | None = None
    chunks: int = 0
    finish: str | None = None
    done: bool = False  # ``data: [DONE]`` arrived
    error: dict[str, Any] | None = None  # an ``data: {"error": ...}`` event
    exc: str | None = None  # the connection failed (e.g. an incomplete chunked body)
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.done and self.finish is not None and self.error is None

    @property
    def explicit_failure(self) -> bool:
        """The client can tell it failed: an error event, a broken connection or a non-200."""
        return self.error is not None or self.exc is not None or (self.status is not None and self.status != 200)

    @property
    def silent(self) -> bool:
        """Neither complete nor explicitly failed: a truncated stream that ends like a normal one."""
        return not self.complete and not self.explicit_failure

    def kind(self) -> str:
        return "complete" if self.complete else "explicit_error" if self.explicit_failure else "silent_truncation"


def chat_body(model: str, max_tokens: int, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "count slowly"}],
        "max_tokens": max_tokens,
        "stream": stream,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def stream_chat(
    url: str, model: str, max_tokens: int, *, key: str = KEY, timeout_s: float = 60.0, on_chunk: Any = None
) -> StreamResult:
    out = StreamResult()
    headers = {"authorization": f"Bearer {key}"}
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=chat_body(model, max_tokens),
                          headers=headers, timeout=timeout_s) as r:  # fmt: skip
            out.status = r.status_code
            out.headers = dict(r.headers)
            if r.status_code != 200:
                out.body = r.read().decode("utf-8", "replace")
                return out
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    out.done = True
                    continue
                obj = json.loads(data)
                if "error" in obj:
                    out.error = obj["error"]
                    continue
                choices = obj.get("choices") or []
                if choices:
                    out.chunks += 1
                    out.finish = choices[0].get("finish_reason") or out.finish
                    if on_chunk is not None:
                        on_chunk(out)
    except httpx.HTTPError as e:
        out.exc = f"{type(e).__name__}: {e}"
    return out


def first_success_after(url: str, model: str, t_fault: float, timeout_s: float, max_tokens: int = 2) -> dict[str, Any]:
    """Send small streams until one completes; returns the recovery time from ``t_fault`` and the
    statuses seen meanwhile (what clients got while the fault lasted)."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = stream_chat(url, model, max_tokens, timeout_s=30)
        if r.complete:
            return {"recovery_s": round(time.monotonic() - t_fault, 2), "meanwhile": seen}
        label = str(r.status) if r.status != 200 else r.kind()
        if r.status in (429, 503):
            assert "retry-after" in r.headers, r.headers  # every refusal tells the client when to retry
        seen[label] = seen.get(label, 0) + 1
        time.sleep(0.25)
    pytest.fail(f"no successful request within {timeout_s}s of the fault (seen: {seen})")


@dataclass
class FaultRecord:
    fault: str
    behaviour: str
    recovery_s: float | None
    detail: dict[str, Any] = field(default_factory=dict)


class Recorder:
    def __init__(self) -> None:
        self.records: list[FaultRecord] = []

    def add(self, fault: str, behaviour: str, recovery_s: float | None, **detail: Any) -> None:
        self.records.append(FaultRecord(fault, behaviour, recovery_s, detail))

    def write(self) -> None:
        lines = [f"{r.fault:<28} {r.recovery_s!s:>8} s  {r.behaviour}  {r.detail}" for r in self.records]
        print("\nfault matrix (fault, recovery, behaviour):\n" + "\n".join(lines))
        out = os.environ.get(RESULTS_ENV)
        if out:
            Path(out).write_text(json.dumps([asdict(r) for r in self.records], indent=2) + "\n", encoding="utf-8")


def ray_session_logs() -> Iterator[Path]:
    """Every file under the running Ray session's log directory (gateway, replicas, engines)."""
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    for p in (session / "logs").rglob("*"):
        if p.is_file():
            yield p
