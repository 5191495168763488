"""`make bench` → ``bench/results/latest.{md,json}``: ``python -m bench.run [--quick] [--only …]``.

Sections run one after another on the same machine (stack tax, routing gain, simulator fidelity,
autoscaling, default max_running_requests vs a sweep); each reports "not measured: <reason>" rather
than a number when a piece is missing.
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bench import report
from bench.client import Spec
from bench.procs import ROOT
from serving.cli.errors import fail


@dataclass(frozen=True)
class Options:
    """What the sections read from the command line."""

    quick: bool = False
    arms: list[str] | None = None
    concurrency: int = 64
    requests: int | None = None
    max_tokens: int | None = None
    profile: bool = False
    time_scale: float = 1.0
    seconds: float | None = None
    event_rates: list[str] | None = None


def stack_tax(args: Options, logs: Path) -> dict[str, Any]:
    from bench import stack_tax as st

    seconds = args.seconds or (5.0 if args.quick else st.MIN_WINDOW_S)
    spec = Spec(
        url="",
        model="",
        concurrency=args.concurrency,
        requests=args.requests or 0,
        duration_s=0.0 if args.requests else seconds,
        warmup=64 if args.quick else 128,
        max_tokens=args.max_tokens or (32 if args.quick else 128),
    )
    low = st.low_spec(spec)
    out = st.run(spec, logs / "stack_tax", args.arms, rates=args.event_rates, low=low, profile=args.profile)
    return {"status": "measured", **out}


def routing(args: Options, logs: Path) -> dict[str, Any]:
    from bench import routing as rt

    spec = Spec(
        url="",
        model="",
        mode="conversations",
        conversations=16 if args.quick else 64,
        turns=4 if args.quick else 8,
        concurrency=8 if args.quick else 32,
        warmup=0,
        max_tokens=32 if args.quick else 48,
    )
    return rt.run(spec, logs / "routing", time_scale=args.time_scale)


def fidelity(args: Options, logs: Path) -> dict[str, Any]:
    from bench import fidelity as fd

    return fd.run()


def autoscaling(args: Options, logs: Path) -> dict[str, Any]:
    from bench import autoscale

    q = args.quick
    return autoscale.run(
        logs / "autoscaling",
        base=4,
        step=16,
        base_s=10 if q else 20,
        step_s=30 if q else 60,
        after_s=15 if q else 40,
        ttft_slo_s=1.0,
        max_tokens=64,
    )


def llama_builds(args: Options, logs: Path) -> dict[str, Any]:
    from bench import llama_builds as lb

    return lb.run(logs / "llama_builds", seconds=20.0)


def admission(args: Options, logs: Path) -> dict[str, Any]:
    from bench import admission as ad

    return ad.run()


def fair_queuing(args: Options, logs: Path) -> dict[str, Any]:
    import asyncio

    from bench import fair_queuing as fq

    return {"status": "measured", **asyncio.run(fq.run(15.0 if args.quick else 30.0, 2, 10))}


def limits(args: Options, logs: Path) -> dict[str, Any]:
    from bench import limits as lm

    tokens = args.max_tokens or (32 if args.quick else 128)
    return lm.run(logs, seconds=20.0, concurrency=args.concurrency, max_tokens=tokens)


SECTIONS: dict[str, Callable[[Options, Path], dict[str, Any]]] = {
    "stack_tax": stack_tax,
    "routing": routing,
    "fidelity": fidelity,
    "autoscaling": autoscaling,
    "llama_builds": llama_builds,
    "admission": admission,
    "fair_queuing": fair_queuing,
    "limits": limits,
}


def _csv(value: str | None) -> list[str] | None:
    return value.split(",") if value else None


app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@app.command()
def main(
    quick: Annotated[bool, typer.Option("--quick", help="short smoke run (fewer requests, shorter steps)")] = False,
    only: Annotated[str | None, typer.Option(help=f"sections: {','.join(SECTIONS)}")] = None,
    arms: Annotated[str | None, typer.Option(help="stack-tax arms, e.g. a,b0,c")] = None,
    concurrency: Annotated[int, typer.Option()] = 64,
    requests: Annotated[
        int | None, typer.Option(help="stack tax: a fixed request count per arm instead of --seconds")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="stack tax: measured seconds per window (default 20; quick 5)")
    ] = None,
    event_rates: Annotated[str | None, typer.Option(help="stack tax: mtp,token (default both)")] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="py-spy our stack arm even when its goals are met")
    ] = False,
    time_scale: Annotated[float, typer.Option(help="routing: simulator time scale")] = 1.0,
    out: Annotated[Path, typer.Option()] = ROOT / "bench" / "results",
    name: Annotated[str | None, typer.Option(help="results file stem (default: latest, or quick with --quick)")] = None,
) -> None:
    """Run the benchmark sections and write bench/results/<name>.{md,json}."""
    sections = _csv(only)
    unknown = [s for s in sections or [] if s not in SECTIONS]
    if unknown:
        fail(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args = Options(
        quick, _csv(arms), concurrency, requests, max_tokens, profile, time_scale, seconds, _csv(event_rates)
    )
    argv = sys.argv[1:]
    started = time.monotonic()
    logs = ROOT / ".cache" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.run", *argv]),
        "started_at": report.now_iso(),
        "quick": args.quick,
        "machine": report.machine(),
        "load_before": report.load_average(),
        "logs": str(logs),
        "sections": {},
    }
    for section, fn in SECTIONS.items():
        if sections and section not in sections:
            continue
        print(f"== {section}", flush=True)
        try:
            result["sections"][section] = fn(args, logs)
        except Exception as exc:
            traceback.print_exc()
            result["sections"][section] = {"status": f"not measured: {type(exc).__name__}: {exc}"}
    result["load_after"] = report.load_average()
    result["duration_s"] = time.monotonic() - started
    md, js = report.write(result, out, name or ("quick" if args.quick else "latest"))
    print(f"wrote {md} and {js} ({result['duration_s']:.0f} s)")


if __name__ == "__main__":
    app()
