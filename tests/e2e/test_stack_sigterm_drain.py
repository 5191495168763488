"""A stop signal to a running `serving serve` drains the stream in flight to completion, then stops
every process of the stack (checked with psutil): a SIGTERM to its process alone or to its whole
process group (as `timeout` sends), or a SIGKILL of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psutil
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def _is_simulator(p: psutil.Process) -> bool:
    try:
        return "serving.engines.simulator" in " ".join(p.cmdline())
    except psutil.Error:  # exited (or a zombie) while we looked
        return False


@dataclass
class Stopped:
    lines: list[bytes]  # the stream's
    stack: list[psutil.Process]  # every process of the stack while it ran
    engines: list[psutil.Process]
    log: str
    took_s: float  # from the signal to serving serve's exit


def _serve_stream_and_signal(name: str, send: Callable[[int], None]) -> Stopped:
    """Start the stack, stream 60 tokens, call ``send(pid)`` after the first token."""
    port = free_port()
    sets = {
        "engine.kind": "simulator",
        "engine.simulator.fixed_ttft_s": "0.05",
        "engine.simulator.fixed_tpot_s": "0.05",  # 60 tokens ≈ 3 s of streaming
        "parallelism.gpu_type": "cpu",
        "gateway.port": str(port),
        "replica.drain_grace_s": "20",
        "telemetry.log_level": "WARNING",
    }
    argv = [sys.executable, "-m", "serving.cli.main", "serve"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    log_path = ROOT / ".cache" / f"test-{name}-serve.log"
    log = log_path.open("wb")  # a file: a full pipe would stall it
    serve = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    lines: list[bytes] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None, f"serving serve exited early; see {log_path}"
            time.sleep(0.5)
        else:
            pytest.fail("stack not ready")
        stack = psutil.Process(serve.pid).children(recursive=True)
        engines = [p for p in stack if _is_simulator(p)]
        first = threading.Event()

        def stream() -> None:
            body = {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 60,
                "stream": True,
            }
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line.encode())
                        first.set()

        t = threading.Thread(target=stream)
        t.start()
        assert first.wait(30), "no first token"
        t0 = time.monotonic()
        send(serve.pid)
        t.join(60)
        serve.wait(90)
        took = time.monotonic() - t0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
    return Stopped(lines, stack, engines, log_path.read_text(errors="replace"), took)


def test_sigterm_drains_in_flight_stream_and_leaves_no_engine():
    run = _serve_stream_and_signal("sigterm", lambda pid: os.kill(pid, signal.SIGTERM))
    assert run.lines[-1] == b"data: [DONE]", run.lines[-3:]
    assert sum(1 for x in run.lines if b'"content"' in x) >= 50
    assert run.engines, "the simulator engine process was not found"
    gone = psutil.wait_procs(run.engines, timeout=30)[1]
    assert not gone, f"engine processes left behind: {[p.pid for p in gone]}"


def test_sigterm_to_the_process_group_drains_and_leaves_no_process():
    # `serving serve` runs the stack in a session of its own, so a signal to its whole group (as
    # `timeout` sends) reaches only it; Ray's node processes never get it, and the stack stops as for
    # a single SIGTERM (Serve's graceful shutdown included).
    run = _serve_stream_and_signal("sigterm-group", lambda pid: os.killpg(pid, signal.SIGTERM))
    assert run.lines[-1] == b"data: [DONE]", run.lines[-3:]
    assert "had already exited" not in run.log, run.log[-2000:]
    assert run.took_s < 30, f"stop took {run.took_s:.1f} s:\n{run.log[-2000:]}"
    assert run.engines, "the simulator engine process was not found"
    left = psutil.wait_procs(run.stack, timeout=30)[1]
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left if p.is_running()]}"


def test_serving_serve_killed_outright_still_drains_and_stops_the_stack():
    # SIGKILL cannot be handled: the stack process gets a SIGTERM from the kernel when its parent dies
    run = _serve_stream_and_signal("sigkill", lambda pid: os.kill(pid, signal.SIGKILL))
    left = psutil.wait_procs(run.stack, timeout=60)[1]
    for p in left:  # a failing run leaves nothing behind for the tests after it
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert run.lines[-1] == b"data: [DONE]", run.lines[-3:]
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left if p.is_running()]}"
