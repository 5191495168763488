"""Shared fixtures: the repository root, the shared reference folder, free ports."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"../shared/reference not found beside the checkout ({REFERENCE})")
    return REFERENCE


@pytest.fixture(scope="session")
def build():
    """scripts/build_llama_server.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("build_llama_server", ROOT / "scripts" / "build_llama_server.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_llama_server"] = module
    spec.loader.exec_module(module)
    return module


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
