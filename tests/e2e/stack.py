"""The whole stack as `serving serve` runs it — a private local Ray cluster, the HAProxy ingress,
the gateway and engine replicas — started in-process for e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from serving.config import Settings, load_settings
from tests.conftest import free_port


def stack_settings(**sections: Any) -> Settings:
    base: dict[str, Any] = {
        "gateway": {"port": free_port()},
        "replica": {"startup_timeout_s": 120, "health_check_period_s": 2, "drain_grace_s": 2},
        "telemetry": {"log_level": "INFO"},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return load_settings(overrides=base, env={})


def engine_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "serving.engines.simulator" in cmd or "llama-server" in cmd:
            found.append(p)
    return found


@contextmanager
def running_stack(settings: Settings, *, num_gpus: int = 0, metrics_export_port: int | None = None) -> Iterator[str]:
    """Start Ray (declaring ``num_gpus`` GPUs, none of which exist), deploy, yield the URL.
    ``metrics_export_port``: where Ray's metrics agent serves Ray and Serve metrics (as the chart's
    ``metrics`` container port 8080 does)."""
    import os

    import ray

    from serving.local import local_node_env, serve_forever, shutdown

    saved = dict(os.environ)
    os.environ.update(local_node_env(settings, os.environ))
    extra = {} if metrics_export_port is None else {"_metrics_export_port": metrics_export_port}
    ray.init(address="local", num_cpus=4, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False, **extra)
    try:
        yield serve_forever(settings, block=False)
    finally:
        shutdown()
        os.environ.clear()
        os.environ.update(saved)
