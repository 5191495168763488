"""SIGTERM to a running `serving serve` drains the stream in flight to completion, then stops
every engine process (checked with psutil)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

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


def test_sigterm_drains_in_flight_stream_and_leaves_no_engine():
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
    log = (ROOT / ".cache" / "test-sigterm-serve.log").open("wb")  # a file: a full pipe would stall it
    serve = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None, "serving serve exited early; see .cache/test-sigterm-serve.log"
            time.sleep(0.5)
        else:
            pytest.fail("stack not ready")
        engines = [p for p in psutil.Process(serve.pid).children(recursive=True) if _is_simulator(p)]
        lines: list[bytes] = []
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
        os.kill(serve.pid, signal.SIGTERM)
        t.join(60)
        assert lines[-1] == b"data: [DONE]", lines[-3:]
        assert sum(1 for x in lines if b'"content"' in x) >= 50
        serve.wait(90)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
    assert engines, "the simulator engine process was not found"
    gone = psutil.wait_procs(engines, timeout=30)[1]
    assert not gone, f"engine processes left behind: {[p.pid for p in gone]}"
