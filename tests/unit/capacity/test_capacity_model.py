"""The one capacity model: importable on its own, and the pools SGLang 0.5.23 sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.capacity import Layout, admission_reserve, capacity
from serving.config import GpuType, get_preset

pytestmark = pytest.mark.unit


def test_capacity_imports_before_the_settings_package() -> None:
    # serving.config's validation imports serving.capacity: the reverse must not be needed at import
    r = subprocess.run(
        [sys.executable, "-c", "import serving.capacity, serving.config"], check=False, capture_output=True
    )
    assert r.returncode == 0, r.stderr.decode()


def test_state_and_kv_pools_split_what_the_weights_leave() -> None:
    cap = capacity(Layout(get_preset("qwen3.6-27b"), GpuType.H200, draft_tokens=4))
    kv_bytes = cap.kv_pool_tokens * cap.kv_bytes_per_token
    assert cap.weights_bytes + cap.state_pool_bytes + kv_bytes <= cap.budget_bytes
    assert cap.budget_bytes - (cap.weights_bytes + cap.state_pool_bytes + kv_bytes) < cap.kv_bytes_per_token
    # SGLang's --mamba-full-memory-ratio 0.9: state ≈ 0.9 × KV (before the intermediate states)
    assert 0.6 < cap.state_pool_bytes / kv_bytes < 1.0


def test_admission_counts_the_prompt_and_a_share_of_max_tokens() -> None:
    assert admission_reserve(1000, 100) == 1070
    assert admission_reserve(1000, 100, 1.0) == 1100  # the exact reservation
