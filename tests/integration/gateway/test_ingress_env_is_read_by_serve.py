"""Every variable the ingress table puts in a Ray node's environment is one the pinned Ray Serve
reads, and the controller's beat takes the value we set (Serve reads these at import time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.config.settings import IngressPath
from serving.gateway import ingress

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def serve_source() -> str:
    """The pinned Ray Serve's own source, read when a test here runs (not at collection)."""
    import ray.serve

    return "\n".join(p.read_text() for p in Path(ray.serve.__file__).parent.rglob("*.py"))


@pytest.mark.parametrize("path", list(IngressPath))
def test_every_variable_of_the_path_is_a_name_serve_reads(path: IngressPath, serve_source: str) -> None:
    unknown = [name for name in ingress.env_for(path) if f'"{name}"' not in serve_source]
    assert unknown == []


def test_serves_controller_reconciles_at_the_interval_every_path_sets() -> None:
    intervals = {ingress.env_for(p)["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] for p in IngressPath}
    (value,) = intervals
    read = subprocess.run(
        [sys.executable, "-c", "from ray.serve._private import constants as c; print(c.CONTROL_LOOP_INTERVAL_S)"],
        env={"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": value, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert float(read.stdout) == float(value) == 0.5
