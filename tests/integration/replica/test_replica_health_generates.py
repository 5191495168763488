"""Health means "can generate": llama.cpp's /health keeps answering 200 while its scheduler is
stuck, so the replica's health check generates one token itself, and a replica whose engine can no
longer generate is replaced. The scheduler is stuck for real: its thread (the server's main
thread) is stopped with ptrace while the HTTP threads keep serving."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterator

import httpx
import pytest
import ray
from replica_helpers import pid_gone, poll

from serving.config import load_settings
from serving.registry import registry_actor

pytestmark = [pytest.mark.integration, pytest.mark.llama_server]  # needs the llama-server build

_PTRACE_SEIZE, _PTRACE_INTERRUPT, _PTRACE_DETACH = 0x4206, 0x4207, 17


@contextlib.contextmanager
def stopped_thread(tid: int) -> Iterator[None]:
    """Stop one thread (not its process) until the block ends: the tracer is this process."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(_PTRACE_SEIZE, tid, None, None) != 0:
        pytest.fail(f"ptrace(PTRACE_SEIZE, {tid}) failed: errno {ctypes.get_errno()}")
    libc.ptrace(_PTRACE_INTERRUPT, tid, None, None)
    try:
        yield
    finally:
        libc.ptrace(_PTRACE_DETACH, tid, None, None)


def _endpoints(app: str) -> list[dict]:
    return [e for e in ray.get(registry_actor().snapshot.remote()) if e["replica_id"].startswith(app + "/")]


def test_a_llamacpp_engine_whose_scheduler_is_stuck_is_replaced(serve_app):
    s = load_settings(
        overrides={
            "engine": {"kind": "llamacpp", "port": 0},
            "parallelism": {"cpus_per_rank": 0.5},
            "replica": {"health_check_period_s": 1, "health_check_timeout_s": 3, "health_generate_interval_s": 0},
        },
        env={},
    )
    app = "health-generates"
    h = serve_app(s, app)
    info = h.info.remote().result(timeout_s=30)
    (rank0,) = h.ranks.remote().result(timeout_s=30)
    pid = rank0["pid"]
    t0 = time.monotonic()
    with stopped_thread(pid):  # the main thread runs llama.cpp's task loop; its tid is the pid
        # HTTP still answers: liveness alone would keep this engine forever
        assert httpx.get(info["url"] + "/health", timeout=5).status_code == 200
        new = poll(
            lambda: [e for e in _endpoints(app) if e["replica_id"] != info["replica_id"] and not e["draining"]],
            timeout_s=90,
            interval_s=0.5,
        )
    took = time.monotonic() - t0
    assert new[0]["url"] != info["url"]
    print(f"stuck llama.cpp scheduler: a new replica served after {took:.1f} s")  # docs/reliability.md
    poll(lambda: pid_gone(pid), 60)  # the stuck engine was stopped, not left behind
