"""The vLLM lane (`make test-vllm`): vLLM's CPU build from `.venv-vllm` serving the tiny Qwen3
model that `scripts/vllm_tiny_model.py` writes, behind the real stack (Ray, HAProxy ingress,
gateway, engine replica). `make test-vllm` creates both; nothing is downloaded."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.config import Settings
from tests.conftest import ROOT
from tests.e2e.stack import running_stack, stack_settings

VENV = Path(os.environ.get("QWEN_SERVE_VLLM_VENV", ROOT / ".venv-vllm"))
PYTHON = VENV / "bin" / "python"
MODEL = Path(os.environ.get("QWEN_SERVE_VLLM_MODEL", ROOT / ".cache" / "vllm" / "qwen3-tiny"))
SERVED = "qwen3-tiny"
# vLLM's CPU backend sizes its KV cache from this (GiB), not from --gpu-memory-utilization.
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def token_ids() -> dict[str, int]:
    return dict(json.loads((MODEL / "qwen-serve-tiny.json").read_text())["token_ids"])


def vllm_settings(**sections: Any) -> Settings:
    """The production plan's engine flags (qwen3 reasoning parser, qwen3_coder tool parser, auto
    tool choice), on CPU: eager mode (torch.compile would add a minute to start-up)."""
    base: dict[str, Any] = {
        "model": {"preset": "qwen3-tiny", "path": str(MODEL)},
        "engine": {"kind": "vllm", "binary": str(PYTHON), "extra_args": ["--enforce-eager"], "env": ENGINE_ENV},
        "parallelism": {"gpu_type": "cpu"},
        "context_length": 2048,
        "memory": {"max_running_requests": 4},
        "replica": {"startup_timeout_s": 300, "health_check_period_s": 2, "drain_grace_s": 2},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return stack_settings(**base)


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} missing: run `make test-vllm` (scripts/vllm_env.sh creates it)")
    if not (MODEL / ".complete").exists():
        pytest.fail(f"{MODEL} missing: run `make test-vllm` (scripts/vllm_tiny_model.py writes it)")


@pytest.fixture(scope="module")
def stack(vllm_ready: None) -> Iterator[dict[str, str]]:
    """One stack for the module: gateway URL, engine URL, app name. One replica at first; the
    autoscaling test (last in its module) may ask for a second."""
    import ray

    from serving.registry import registry_actor

    s = vllm_settings(
        autoscaling={
            "min_replicas": 1,
            "max_replicas": 2,
            "target_load_per_replica": 2,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 600,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 1.5,
        },
    )
    with running_stack(s) as url:
        eps = [e for e in ray.get(registry_actor().snapshot.remote()) if e["model"] == SERVED]
        assert len(eps) == 1, eps
        yield {"url": url, "engine": eps[0]["url"], "app": s.ray.app_name}


def engine_gauges(engine_url: str) -> tuple[float, float]:
    from serving.config.settings import EngineKind
    from serving.engines import get_engine

    text = httpx.get(engine_url + "/metrics", timeout=5).text
    load = get_engine(EngineKind.VLLM).parse_load(text)
    return load.running, load.queued
