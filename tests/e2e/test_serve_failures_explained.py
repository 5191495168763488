"""`serving serve` says what went wrong, where, and what to do — within a minute — and exits
non-zero: an engine that dies at start-up, and replicas that can never be scheduled. On a machine
without GPUs the simulator still runs out of the box (the local cluster declares its GPUs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def _serve(sets: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "serving.cli.main", "serve"]
    for k, v in {"gateway.port": str(free_port()), "telemetry.log_level": "WARNING", **sets}.items():
        argv += ["--set", f"{k}={v}"]
    out = log.open("wb")  # a file: a full pipe would stall it
    return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"serving serve did not exit within {timeout_s:.0f} s")


def test_an_engine_killed_by_sigill_at_start_is_explained_and_serve_exits(tmp_path):
    crash = tmp_path / "llama-server"
    crash.write_text("#!/bin/sh\necho 'load_tensors: loading model tensors'\necho 'about to multiply'\nkill -ILL $$\n")
    crash.chmod(0o755)
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    proc = _serve({"engine.kind": "llamacpp", "engine.binary": str(crash)}, log)
    code = _finish(proc, 120)
    took = time.monotonic() - t0
    out = log.read_text()
    assert code == 1, out
    assert "engine llamacpp rank 0 exited during start-up: killed by SIGILL (illegal instruction)" in out, out
    assert "| about to multiply" in out  # the engine's last lines
    assert "-rank0.log" in out  # and where its whole log is
    assert "hint: the binary executes an instruction this CPU does not support" in out
    assert "Traceback" not in out
    assert took < 60 + 30, f"took {took:.0f} s (Ray's start included)"
    print(f"SIGILL at start: serving serve exited 1 with the explanation after {took:.1f} s")


def test_a_replica_that_needs_gpus_on_a_machine_without_fails_fast_naming_the_fix(tmp_path):
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    proc = _serve({"engine.kind": "sglang", "model.preset": "qwen3.6-27b", "parallelism.gpu_type": "h200"}, log)
    code = _finish(proc, 90)
    out = log.read_text()
    assert code == 1, out
    assert "can never be scheduled" in out
    assert "GPU 1 (a node has at most 0)" in out
    assert "engine.kind=simulator" in out
    assert "ray.address" in out
    took = time.monotonic() - t0
    assert took < 60
    print(f"unschedulable replica: serving serve exited 1 naming the fix after {took:.1f} s")


def test_the_simulator_serves_qwen36_on_a_machine_without_gpus(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    proc = _serve(
        {"engine.kind": "simulator", "model.preset": "qwen3.6-27b", "parallelism.gpu_type": "h200",
         "gateway.port": str(port)},
        log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        answer = None
        while time.monotonic() - t0 < 60:
            assert proc.poll() is None, log.read_text()
            try:
                r = httpx.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "qwen3.6-27b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                    timeout=10,
                )
                if r.status_code == 200:
                    answer = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert answer is not None, f"no chat answer within 60 s:\n{log.read_text()}"
        print(f"simulator without GPUs: first chat answer {time.monotonic() - t0:.1f} s after serving serve started")
        assert answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] >= 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the README says to stop it
        _finish(proc, 60)
