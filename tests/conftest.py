"""Shared fixtures: the repository root, the in-repo reference data, free ports."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.procs import LLAMA_DEV_BIN, dev_path

ROOT = Path(__file__).resolve().parents[1]
# The engine finds llama-server on PATH (or engine.binary); tests, like `make serve`, use the checkout's build.
LLAMA_SERVER = LLAMA_DEV_BIN / "llama-server"
os.environ["PATH"] = dev_path()
# Test-only reference data (vLLM's option table, the KubeRay CRDs); provenance in its README.md.
# SGLang's option table ships with the package: serving.engines.reference.SGLANG_FLAGS.
REFERENCE = ROOT / "tests" / "data" / "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE


def load_script(name: str) -> Any:
    """scripts/<name>.py as a module (scripts are not part of the package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def build():
    """scripts/build_llama_server.py as a module."""
    return load_script("build_llama_server")


@pytest.fixture(scope="session")
def sglang_wheel() -> Path:
    """SGLang 0.5.23's wheel unpacked in .cache/engines/ (``make engine-wheels`` fetches it; so does
    this fixture on first use)."""
    wheels = load_script("engine_wheels")
    try:
        return Path(wheels.fetch("sglang", "0.5.23"))
    except wheels.FetchError as e:
        pytest.fail(f"SGLang's wheel is needed to check against SGLang's own code: {e}", pytrace=False)


def wait_http_ok(url: str, proc: Any, log: Path, *, what: str, timeout_s: float) -> None:
    """Until ``url`` answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} not ready after {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def start_uvicorn(app: Any, **config: Any) -> tuple[Any, threading.Thread, str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port in a thread; wait until it listens."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def stop_uvicorn(server: Any, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="session")
def sglang(sglang_wheel: Path) -> Any:
    """SGLang's own request/response models and metric names (tests/sglang_oracle.py)."""
    from tests.sglang_oracle import SGLang

    return SGLang(sglang_wheel)
