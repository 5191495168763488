"""Predicted vs published performance: ``serving simulator report [--json]``.

Each published cell (../shared/reference/qwen36.md, "Published performance") is replayed in
*virtual time* through the same scheduler and timing model the server runs: ``concurrency`` closed-loop
clients each send ``requests_per_client`` requests of 8192 random (uncacheable) prompt tokens and
1024 output tokens; TTFT and TPOT are medians over requests, output tok/s is total output tokens over
the makespan (as SGLang's bench_serving reports them). No clock is involved. Lengths vary uniformly
over the top 10 % of the nominal ones (fixed seed), as a random-length benchmark does; identical
lengths would keep every request in lock-step and turn steady state into synchronized waves.

Cookbook deployment assumed for every cell (SGLang's defaults where the cookbook sets nothing):
TP=1, MTP 3/1/4 (``--sim-mtp-accept-length`` 2.8), fp32 SSM state (SGLang's default) with
``extra_buffer`` (two state slots per running request), ``--max-running-requests`` 48 (SGLang's cap
with speculative decoding), ``--mem-fraction-static`` 0.85 (an assumption: the cookbook does not say).
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Annotated

import typer

from serving.capacity import admission_reserve
from serving.config.hardware import GpuType
from serving.engines.simulator.prefix_cache import PrefixCache
from serving.engines.simulator.scheduler import BatchScheduler, SimRequest
from serving.engines.simulator.timing import DEFAULT_CALIBRATION, Calibration, Deployment, TimingModel

TOLERANCE = 0.15


@dataclass(frozen=True)
class Cell:
    gpu: GpuType
    preset: str
    concurrency: int
    metric: str  # "ttft_s" | "tpot_s" | "output_tok_s"
    published: float
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.gpu.value} {self.preset} c={self.concurrency} {self.metric}"


PUBLISHED: tuple[Cell, ...] = (
    Cell(GpuType.H200, "qwen3.6-27b", 1, "ttft_s", 0.734),
    Cell(GpuType.H200, "qwen3.6-27b", 1, "tpot_s", 0.00561),
    Cell(GpuType.H200, "qwen3.6-27b", 1, "output_tok_s", 159),
    Cell(GpuType.H200, "qwen3.6-27b", 16, "ttft_s", 1.2),
    Cell(GpuType.H200, "qwen3.6-27b", 16, "tpot_s", 0.0173),
    Cell(GpuType.H200, "qwen3.6-27b", 16, "output_tok_s", 787),
    Cell(GpuType.H200, "qwen3.6-27b-fp8", 16, "tpot_s", 0.0126),
    Cell(GpuType.H200, "qwen3.6-27b-fp8", 16, "output_tok_s", 1099),
    Cell(GpuType.H100, "qwen3.6-27b", 16, "ttft_s", 67.0, "memory-starved queueing"),
    Cell(GpuType.H100, "qwen3.6-27b", 16, "output_tok_s", 211),
    Cell(GpuType.B200, "qwen3.6-27b", 16, "output_tok_s", 1237),
    Cell(GpuType.H200, "qwen3.6-35b-a3b", 1, "tpot_s", 0.00223),
    Cell(GpuType.H200, "qwen3.6-35b-a3b", 16, "output_tok_s", 1710),
)

INPUT_TOKENS, OUTPUT_TOKENS = 8192, 1024


def cookbook_deployment(gpu: GpuType, preset: str) -> Deployment:
    return Deployment.of(
        preset,
        gpu=gpu,
        tp=1,
        ssm_dtype="float32",
        mem_fraction=0.85,
        max_running=48,
        draft_tokens=4,
        accept_length=2.8,
        extra_buffer=True,
    )


@dataclass(frozen=True)
class Run:
    ttft_s: float
    tpot_s: float
    output_tok_s: float
    max_running: int
    kv_pool_tokens: int


def replay(
    d: Deployment,
    concurrency: int,
    *,
    input_tokens: int = INPUT_TOKENS,
    output_tokens: int = OUTPUT_TOKENS,
    requests_per_client: int = 5,
    cal: Calibration = DEFAULT_CALIBRATION,
    jitter: float = 0.1,
    seed: int = 0,
) -> Run:
    """Closed-loop benchmark in virtual time through the server's scheduler and timing model."""
    model = TimingModel(d, cal)
    cap = model.capacity()
    sched = BatchScheduler(model, PrefixCache(0), max_running=cap.max_running, kv_pool_tokens=cap.kv_pool_tokens)
    now = 0.0
    left = concurrency * requests_per_client
    out_total = 0
    done: list[SimRequest] = []

    rng = random.Random(seed)  # noqa: S311 - benchmark lengths, not secrets

    def send() -> None:
        nonlocal left, out_total
        left -= 1
        n_in = rng.randint(int(input_tokens * (1 - jitter)), input_tokens)
        n_out = rng.randint(int(output_tokens * (1 - jitter)), output_tokens)
        out_total += n_out
        sched.submit(SimRequest(n_in, n_out, admission_reserve(n_in, output_tokens)), now)

    for _ in range(min(concurrency, left)):
        send()

    while True:
        b = sched.next_batch(now)
        if b is None:
            break
        now += b.duration_s
        for r, _ in sched.complete(b, now):
            if r.state == "done":
                done.append(r)
                if left > 0:
                    send()
    ttft = statistics.median((r.first_token_at or 0) - r.arrival for r in done)
    tpot = statistics.median(((r.finished_at or 0) - (r.first_token_at or 0)) / max(r.n_out - 1, 1) for r in done)
    running = min(cap.max_running, cap.kv_pool_tokens // (input_tokens + output_tokens))
    return Run(ttft, tpot, out_total / now, running, cap.kv_pool_tokens)


@dataclass(frozen=True)
class Row:
    cell: str
    published: float
    predicted: float
    ratio: float
    within: bool
    note: str


def predictions(cal: Calibration = DEFAULT_CALIBRATION) -> list[Row]:
    cache: dict[tuple[GpuType, str, int], Run] = {}
    rows = []
    for c in PUBLISHED:
        key = (c.gpu, c.preset, c.concurrency)
        if key not in cache:
            cache[key] = replay(cookbook_deployment(c.gpu, c.preset), c.concurrency, cal=cal)
        run = cache[key]
        pred = float(getattr(run, c.metric))
        ratio = pred / c.published
        note = c.note or ""
        if c.gpu == GpuType.H100:
            note = f"{note}; {run.max_running} running fit (KV pool {run.kv_pool_tokens} tokens)".lstrip("; ")
        rows.append(Row(c.label, c.published, pred, ratio, abs(ratio - 1) <= TOLERANCE, note))
    return rows


app = typer.Typer(help="The simulator's timing model against published benchmarks.", no_args_is_help=True)


@app.command("report")
def report(as_json: Annotated[bool, typer.Option("--json", help="machine-readable rows")] = False) -> None:
    """Predicted vs published for every published cell (virtual-time replay, no real run)."""
    rows = predictions()
    if as_json:
        typer.echo(json.dumps({"tolerance": TOLERANCE, "rows": [asdict(r) for r in rows]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Simulator vs published (±{TOLERANCE:.0%})")
    for col in ("cell", "published", "predicted", "ratio", "ok", "note"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.cell, f"{r.published:.4g}", f"{r.predicted:.4g}", f"{r.ratio:.2f}", "yes" if r.within else "NO", r.note
        )
    Console().print(t)
