"""Helpers for the replica integration tests: simulator settings, process checks, polling."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from serving.config import Settings, load_settings

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

GPUS_PER_NODE = 4
SIM_MODULE = "serving.engines.simulator"


def poll(pred: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2) -> Any:
    """Call ``pred`` until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as e:  # the condition may raise while the system is in flux
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval_s)
    pytest.fail(f"condition not met within {timeout_s}s (last: {last!r})")


def sim_settings(**over: Any) -> Settings:
    """A simulated Qwen3.6-27B instance: free port per replica, fast health checks, tiny CPU asks."""
    base: dict[str, Any] = {
        "model": {"preset": "qwen3.6-27b"},
        "engine": {"kind": "simulator", "port": 0, "simulator": {"time_scale": 0.05, "default_output_tokens": 16}},
        "parallelism": {"tp": 2, "gpus_per_node": GPUS_PER_NODE, "cpus_per_rank": 0.1},
        "replica": {
            "startup_timeout_s": 120,
            "health_check_period_s": 1,
            "health_check_timeout_s": 10,
            "drain_grace_s": 5,
        },
        "autoscaling": {"min_replicas": 1, "max_replicas": 1, "metrics_interval_s": 0.5, "look_back_period_s": 2},
    }
    for section, values in over.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            merged = dict(base[section])
            for k, v in values.items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
            base[section] = merged
        else:
            base[section] = values
    return load_settings(overrides=base, env={})


def sim_processes(marker: str = SIM_MODULE) -> list[psutil.Process]:
    """Live simulator engine processes on this machine whose command line contains ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if SIM_MODULE in cmd and marker in cmd:
            found.append(p)
    return found


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
