"""Real engine processes (llama.cpp's llama-server, the simulator) and the gateway app served by
uvicorn on 127.0.0.1, for the official openai client."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from serving.config import Settings, load_settings
from serving.engines import get_engine, plan_instance
from serving.gateway import create_app
from serving.registry import Endpoint, StaticEndpoints
from tests.conftest import LLAMA_SERVER, free_port, start_uvicorn, stop_uvicorn, wait_http_ok

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class EngineProc:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    settings: Settings

    def endpoint(self) -> Endpoint:
        kind = self.settings.engine.kind
        return Endpoint(self.name, self.url, str(self.settings.model.served_name), kind.value,
                        abort_needs_stream=get_engine(kind).abort_needs_stream)  # fmt: skip


def _wait_healthy(e: EngineProc, timeout_s: float) -> None:
    wait_http_ok(e.url + "/health", e.proc, e.log, what=f"engine {e.name}", timeout_s=timeout_s)


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Callable[..., EngineProc]]:
    procs: list[EngineProc] = []

    def start(name: str, overrides: dict[str, Any], timeout_s: float = 120.0) -> EngineProc:
        s = load_settings(overrides=overrides, env={})
        port = free_port()
        plan = plan_instance(s, host="127.0.0.1", port=port)
        rank0 = plan.ranks[0]
        log = tmp_path / f"{name}.log"
        env = {**os.environ, **rank0.env, "PYTHONPATH": str(ROOT)}
        with log.open("wb") as fh:
            proc = subprocess.Popen(rank0.argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        e = EngineProc(name, f"http://127.0.0.1:{port}", proc, log, s)
        procs.append(e)
        _wait_healthy(e, timeout_s)
        return e

    yield start
    for e in procs:
        e.proc.terminate()
    for e in procs:
        try:
            e.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            e.proc.kill()
            e.proc.wait(timeout=5)


@pytest.fixture
def llama(start_engine: Callable[..., EngineProc]) -> EngineProc:
    if not LLAMA_SERVER.exists():
        pytest.fail(f"llama-server not built at {LLAMA_SERVER} (make llama-server)")
    return start_engine("llama-0", {"engine": {"kind": "llamacpp", "threads": 1}})


@dataclass
class ServedGateway:
    url: str
    app: Any
    server: uvicorn.Server


@pytest.fixture
def serve_gateway() -> Iterator[Callable[..., ServedGateway]]:
    """Serve ``create_app(settings, StaticEndpoints(endpoints))`` with uvicorn in a thread."""
    served: list[tuple[ServedGateway, threading.Thread]] = []

    def serve(
        settings: Settings, endpoints: list[Endpoint], tracer_provider: TracerProvider | None = None
    ) -> ServedGateway:
        app = create_app(settings, StaticEndpoints(endpoints), tracer_provider=tracer_provider)
        server, thread, url = start_uvicorn(app)
        gw = ServedGateway(url, app, server)
        served.append((gw, thread))
        return gw

    yield serve
    for gw, thread in served:
        stop_uvicorn(gw.server, thread)


def settings_for(overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(overrides=overrides or {}, env={})


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
