"""Headless Locust (the `loadtest` CLI) against the simulator: timing accuracy, report files, and the
knee / SLO point where the simulator's timing model puts them."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.capacity.timing import Deployment, TimingModel
from serving.config import load_settings
from serving.engines import plan_instance
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration

PRESET, GPU = "qwen3.6-35b-a3b-fp8", "h200"


def start_simulator(tmp_path: Path, sim: dict, max_running: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    s = load_settings(
        overrides={
            "engine": {"kind": "simulator", "simulator": sim},
            "model": {"preset": PRESET},
            "parallelism": {"gpu_type": GPU},
            "speculative": {"enabled": False},
            "context_length": 16384,
            "memory": {"max_running_requests": max_running},
        },
        env={},
    )
    argv = plan_instance(s, host="127.0.0.1", port=port).ranks[0].argv
    log = (tmp_path / "sim.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            assert proc.poll() is None, (tmp_path / "sim.log").read_text()
            time.sleep(0.3)
    proc.kill()
    pytest.fail("simulator did not become healthy in 60 s")


def loadtest(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
        env=env,
    )


def scenario(tmp_path: Path, out_tokens: int) -> Path:
    p = tmp_path / "fixed.yaml"
    p.write_text(f"name: fixed\nprompt_tokens: 20\noutput_tokens: {out_tokens}\nthinking_ratio: 0.5\n")
    return p


def test_known_ttft_tpot_measured_within_5_percent(tmp_path):
    ttft, tpot = 0.2, 0.02
    proc, url = start_simulator(tmp_path, {"fixed_ttft_s": ttft, "fixed_tpot_s": tpot}, 64)
    try:
        out = tmp_path / "run"
        r = loadtest(
            "run",
            "--host",
            url,
            "--scenario",
            str(scenario(tmp_path, 20)),
            "--model",
            PRESET,
            "--levels",
            "1,32",
            "--duration",
            "5",
            "--warmup",
            "1",
            "--out",
            str(out),
            "--no-progress",
        )
        assert r.returncode == 0, r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    rep = json.loads((out / "report.json").read_text())
    assert [p["load"] for p in rep["points"]] == [1, 32]
    for p in rep["points"]:
        assert p["errors"] == 0
        assert p["requests"] >= 5
        assert p["ttft_s"]["p50"] == pytest.approx(ttft, rel=0.05)
        assert p["tpot_s"]["p50"] == pytest.approx(tpot, rel=0.05)
        assert p["itl_s"]["p50"] == pytest.approx(tpot, rel=0.05)  # each event timed on arrival, not in bursts
    for name in ("report.json", "report.png", "report.html", "records.jsonl", "run.json"):
        assert (out / name).stat().st_size > 0
    lines = (out / "records.jsonl").read_text().splitlines()
    assert sum(1 for ln in lines if not json.loads(ln)["warmup"]) >= sum(p["requests"] for p in rep["points"])


def test_sweep_knee_and_slo_point_follow_the_timing_model(tmp_path):
    scale, max_running, out_tokens = 4.0, 8, 100
    model = TimingModel(Deployment.of(PRESET, gpu=GPU, tp=1, max_running=max_running))
    step = {b: model.decode_step_s(b, b * (30 + out_tokens // 2)) * scale for b in (2, 8)}
    # TPOT objective half-way between the model's decode step at batch 2 and at batch 8: the SLO
    # point must be concurrency 2; throughput stops growing at max_running = 8: the knee.
    slo_tpot = (step[2] + step[8]) / 2
    proc, url = start_simulator(tmp_path, {"time_scale": scale}, max_running)
    try:
        out = tmp_path / "sweep"
        r = loadtest(
            "run",
            "--host",
            url,
            "--scenario",
            str(scenario(tmp_path, out_tokens)),
            "--model",
            PRESET,
            "--levels",
            "2,8,16",
            "--duration",
            "5",
            "--warmup",
            "1.5",
            "--out",
            str(out),
            "--no-progress",
            "--slo-ttft",
            "1.0",
            "--slo-tpot",
            f"{slo_tpot:.5f}",
        )
        assert r.returncode == 0, r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    rep = json.loads((out / "report.json").read_text())
    pts = rep["points"]
    assert all(p["errors"] == 0 for p in pts)
    assert rep["knee"]["load"] == 8
    assert rep["slo_point"]["load"] == 2
    assert pts[1]["tpot_s"]["p50"] == pytest.approx(step[8], rel=0.25)
    assert pts[2]["output_tokens_per_s"] == pytest.approx(pts[1]["output_tokens_per_s"], rel=0.15)  # saturated
    assert (out / "report.png").stat().st_size > 10_000
