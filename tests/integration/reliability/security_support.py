"""A real simulator engine process and the gateway app (``create_app``, auth required, small
limits) served by uvicorn on 127.0.0.1 — the target of the security and fuzzing tests. The
gateway's logs are captured at DEBUG for the key grep."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from serving.config import Settings, load_settings
from serving.engines import plan_instance
from serving.gateway import create_app
from serving.observability.logging import configure_logging
from serving.registry import Endpoint, StaticEndpoints
from tests.conftest import free_port, start_uvicorn, stop_uvicorn

ROOT = Path(__file__).resolve().parents[3]
MODEL = "secure-model"
KEY = "sk-security-test-key-abcdef012345"
KEY2 = "sk-security-test-key-2-zyx987"
WRONG = "sk-security-wrong-key-444444"
ENGINE_KEY = "engine-only-key-31337"
LIMITS = {"max_body_bytes": 64 * 1024, "max_tokens": 64, "max_messages": 8, "max_n": 2, "max_stop": 2}


def security_settings() -> Settings:
    return load_settings(
        overrides={
            "model": {"preset": "qwen3.6-27b", "served_name": MODEL},
            "context_length": 4096,
            "engine": {
                "kind": "simulator",
                "api_key": ENGINE_KEY,
                "simulator": {"zero_delay": True, "default_output_tokens": 8},
            },
            "parallelism": {"tp": 2},
            "gateway": {"api_keys": {"keys": [KEY, KEY2], "required": True}, "limits": LIMITS},
            "telemetry": {"log_level": "DEBUG"},
        },
        env={},
    )


@dataclass
class Secured:
    url: str
    app: Any
    settings: Settings
    engine_log: Path
    gateway_log: io.StringIO


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = security_settings()
    port = free_port()
    rank0 = plan_instance(s, host="127.0.0.1", port=port).ranks[0]
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    env = {**os.environ, **rank0.env, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as fh:
        proc = subprocess.Popen(rank0.argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    captured = io.StringIO()
    handler = configure_logging("DEBUG", json_logs=True, stream=captured)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    try:
        engine_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"simulator exited:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(engine_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("simulator not healthy within 60 s")
            time.sleep(0.2)
        app = create_app(s, StaticEndpoints([Endpoint("sim-0", engine_url, MODEL, "simulator")]))
        server, thread, gw_url = start_uvicorn(app, log_config=None)
        yield Secured(gw_url, app, s, log, captured)
    finally:
        if server is not None and thread is not None:
            stop_uvicorn(server, thread)
        logging.getLogger().removeHandler(handler)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
