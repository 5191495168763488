"""Single-stream tokens/s of every llama-server build configuration kept in
``.cache/llama.cpp/variants/`` (native, native-no-amx, portable, …), side by side in one run.

Each arm serves the shipped SmolLM2 GGUF alone on the machine (one server at a time) and generates
128-token completions back to back; the arms alternate in rounds so a drifting machine load hits
them alike, and each arm is measured for at least ``seconds`` in total. The figure is generated
tokens over wall time of the measured requests; llama.cpp's own ``predicted_per_second`` is
reported beside it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import ROOT

VARIANTS = ROOT / ".cache" / "llama.cpp" / "variants"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gguf() -> Path:
    from serving.config.presets import get_preset

    return Path(get_preset("smollm2-135m").default_weights())


def _measure(binary: Path, seconds: float, logs: Path) -> dict[str, float]:
    port = _free_port()
    argv = [str(binary), "--model", str(_gguf()), "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", "1024", "--parallel", "1", "--no-webui"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with (logs / f"{binary.parent.name}.log").open("a") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            body = {"prompt": "Write a story about a lighthouse.", "n_predict": 128, "ignore_eos": True}
            httpx.post(base + "/completion", json=body, timeout=60).raise_for_status()  # warm-up
            tokens, rates, t0 = 0, [], time.monotonic()
            while time.monotonic() - t0 < seconds:
                answer = httpx.post(base + "/completion", json=body, timeout=60).raise_for_status().json()
                tokens += int(answer["tokens_predicted"])
                rates.append(float(answer["timings"]["predicted_per_second"]))
            wall = time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return {"tokens": tokens, "seconds": wall, "engine_tok_s": sum(rates) / len(rates)}


def run(logs: Path, *, seconds: float = 20.0, rounds: int = 2) -> dict[str, Any]:
    logs.mkdir(parents=True, exist_ok=True)
    arms = sorted(p for p in VARIANTS.glob("*/llama-server") if (p.parent / "llama-server.json").is_file())
    if not arms:
        return {"status": f"not measured: no smoke-tested builds in {VARIANTS} (run `make llama-server`)"}
    totals: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for binary in arms:
            m = _measure(binary, seconds / rounds, logs)
            t = totals.setdefault(binary.parent.name, {"tokens": 0, "seconds": 0.0, "engine_tok_s": 0.0})
            t["tokens"] += m["tokens"]
            t["seconds"] += m["seconds"]
            t["engine_tok_s"] += m["engine_tok_s"] / rounds
    rows = []
    for name, t in totals.items():
        stamp = json.loads((VARIANTS / name / "llama-server.json").read_text())
        rows.append({"config": name, "tok_s": t["tokens"] / t["seconds"], "engine_tok_s": t["engine_tok_s"],
                     "seconds": t["seconds"], "flags": " ".join(stamp.get("cpu_backend_flags", []))})  # fmt: skip
    ref = next((r["tok_s"] for r in rows if r["config"] == "native"), rows[0]["tok_s"])
    for r in rows:
        r["x_native"] = r["tok_s"] / ref
    return {"status": "measured", "arms": rows}
