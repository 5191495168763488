"""One measured load window: start the client process, warm up, snapshot CPU, run, snapshot CPU."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.client import Spec
from bench.procs import PY, ROOT, Proc, RoleRule, child_env, snapshot_cpu
from bench.profiling import Profiler
from bench.stats import RequestResult, cpu_delta_by_role, cpu_ms_per_request, summarize


def measure(
    spec: Spec,
    servers: Sequence[Proc],
    log_dir: Path,
    *,
    rules: Sequence[RoleRule] = (),
    timeout_s: float = 300.0,
    profiler: Profiler | None = None,
    idle_s: float = 0.0,
) -> dict[str, Any]:
    """Run ``spec`` against ``spec.url``; the summary plus CPU seconds and CPU-ms/request per role.

    With ``idle_s``, every process's CPU is also read over that long with no request in flight
    (after the warm-up): the background each role burns whatever the load (Ray's controller,
    proxies, pollers). ``cpu_ms_per_request_net`` is the window's CPU less that background rate.

    With ``profiler``, py-spy samples one process during the measured window (numbers from such a
    run are distorted by the sampler and are not reported as measurements)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    err = (log_dir / "client.log").open("wb")
    spec = Spec(**{**asdict(spec), "result_path": str(log_dir / "client-results.json")})
    popen = subprocess.Popen(
        [PY, "-m", "bench.client", json.dumps(asdict(spec))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        env=child_env(),
        cwd=ROOT,
    )
    err.close()
    client = Proc("client", "client", [], log_dir / "client.log", popen=popen)
    try:
        assert popen.stdout is not None
        assert popen.stdin is not None
        line = popen.stdout.readline()
        if not line:
            popen.wait(timeout=30)
            raise RuntimeError(f"load client exited during warm-up: {(log_dir / 'client.log').read_text()[-2000:]}")
        idle_rate: dict[str, float] = {}
        if idle_s > 0:
            quiet = snapshot_cpu([*servers, client], rules)
            time.sleep(idle_s)
            idle_rate = {
                r: v / idle_s for r, v in cpu_delta_by_role(quiet, snapshot_cpu([*servers, client], rules)).items()
            }
        if profiler:
            profiler.start()
        before = snapshot_cpu([*servers, client], rules)
        popen.stdin.write(b"go\n")
        popen.stdin.flush()
        # The result line comes last; CPU is read while the client is still alive (before it exits).
        out = popen.stdout.readline()
        after = snapshot_cpu([*servers, client], rules)
        if profiler:
            profiler.stop()
        popen.stdin.close()
        popen.wait(timeout=timeout_s)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    if not out:
        raise RuntimeError(f"load client gave no result: {(log_dir / 'client.log').read_text()[-2000:]}")
    data = json.loads(out)
    if data.get("result_path"):
        data = json.loads(Path(data["result_path"]).read_text())
    window = {
        "results": [RequestResult(**r) for r in data["results"]],
        "wall_s": data["wall_s"],
        "cpu_s": cpu_delta_by_role(before, after),
        "idle_cpu_per_s": idle_rate or None,
    }
    return pool([window])


def pool(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Measured windows of one arm (each: ``results``, ``wall_s``, ``cpu_s`` per role and
    ``idle_cpu_per_s`` or None) as one: requests, tokens, wall time and CPU seconds added up,
    percentiles over every request, the idle background as each window read it. :func:`measure`
    returns one window this way, so a pool of measures is a pool of their windows."""
    results = [r for w in windows for r in w["results"]]
    wall = sum(w["wall_s"] for w in windows)
    summary = summarize(results, wall)
    cpu_s: dict[str, float] = {}
    net: dict[str, float] = {}
    idle: dict[str, float] = {}
    for w in windows:
        rate = w["idle_cpu_per_s"] or {}
        for role, s in w["cpu_s"].items():
            cpu_s[role] = cpu_s.get(role, 0.0) + s
            net[role] = net.get(role, 0.0) + max(s - rate.get(role, 0.0) * w["wall_s"], 0.0)
        for role, r in rate.items():
            idle[role] = idle.get(role, 0.0) + r * w["wall_s"] / wall
    has_idle = all(w["idle_cpu_per_s"] for w in windows)
    return {
        "summary": asdict(summary),
        "cpu_s": cpu_s,
        "cpu_ms_per_request": cpu_ms_per_request(cpu_s, summary.ok),
        "idle_cpu_per_s": idle if has_idle else None,
        "cpu_ms_per_request_net": cpu_ms_per_request(net, summary.ok) if has_idle else None,
        "wall_s": wall,
        "windows_s": [w["wall_s"] for w in windows],
        "results": results,
    }
