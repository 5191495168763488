"""Benchmark of the load generator itself: streamed tokens/s per Locust core.

Starts the simulator with ``--sim-zero-delay`` (tokens as fast as it can send them), runs one
headless ``loadtest run`` process (one Locust core) at a fixed concurrency with long outputs, and
divides the streamed tokens (SSE events) by the CPU seconds the load-generator process used — so a
simulator sharing the machine does not flatter or penalise the figure. Goal: ≥ 10,000 tokens/s.

    .venv/bin/python -m bench.loadgen_throughput [--concurrency 32] [--duration 15]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.errors import FAILED, fail
from serving.config import load_settings
from serving.engines import plan_instance

ROOT = Path(__file__).resolve().parents[1]
GOAL = 10_000


@dataclass(frozen=True)
class Args:
    concurrency: int
    duration: float
    output_tokens: int
    port: int


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def main(
    concurrency: Annotated[int, typer.Option()] = 32,
    duration: Annotated[float, typer.Option()] = 15.0,
    output_tokens: Annotated[int, typer.Option()] = 2000,
    port: Annotated[int, typer.Option()] = 18931,
) -> None:
    """Streamed tokens/s per Locust core against the zero-delay simulator."""
    a = Args(concurrency, duration, output_tokens, port)
    overrides = {
        "engine": {"kind": "simulator", "simulator": {"zero_delay": True}},
        "model": {"preset": "qwen3.6-35b-a3b-fp8"},
        "parallelism": {"gpu_type": "h200"},
        "speculative": {"enabled": False},
        "context_length": 16384,
        "memory": {"max_running_requests": 128},
    }
    s = load_settings(overrides=overrides, env={})
    argv = plan_instance(s, host="127.0.0.1", port=a.port).ranks[0].argv
    sim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{a.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    fail("simulator did not start", FAILED)
                time.sleep(0.3)
        with tempfile.TemporaryDirectory() as tmp:
            sc = Path(tmp) / "long.yaml"
            sc.write_text(f"name: long\nprompt_tokens: 50\noutput_tokens: {a.output_tokens}\n")
            out = Path(tmp) / "run"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd = [sys.executable, "-m", "loadtest", "run", "--host", url, "--scenario", str(sc)]
            cmd += ["--model", s.model.served_name or "", "--levels", str(a.concurrency), "--duration", str(a.duration)]
            cmd += ["--warmup", "2", "--out", str(out), "--no-progress", "--gpu-source", "none"]
            subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            rep = json.loads((out / "report.json").read_text())
            events = sum(json.loads(ln)["events"] for ln in (out / "records.jsonl").read_text().splitlines())
            meta = json.loads((out / "run.json").read_text())
            wall = meta["finished"] - meta["started"]
    finally:
        sim.terminate()
        sim.wait(10)
    p = rep["points"][0]
    if p["errors"] or not p["requests"]:
        fail(f"load generator saw {p['errors']} errors in {p['requests']} requests", FAILED)
    result = {
        "concurrency": a.concurrency,
        "wall_s": round(wall, 2),
        "loadgen_cpu_s": round(cpu_s, 2),
        "streamed_events": events,
        "events_per_wall_s": round(events / wall),
        "events_per_loadgen_cpu_s": round(events / cpu_s),
        "measured_window_output_tokens_per_s": round(p["output_tokens_per_s"]),
        "goal_tokens_per_core_s": GOAL,
    }
    print(json.dumps(result, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "loadgen_throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
