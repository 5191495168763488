"""The gateway integration fixtures (real engine processes, uvicorn-served gateway), by their
unique module name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gateway_procs import llama, serve_gateway, start_engine  # found on the path set above

__all__ = ["llama", "serve_gateway", "start_engine"]
