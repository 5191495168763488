"""`make bench` → ``bench/results/latest.{md,json}``: ``python -m bench.run [--quick] [--only …]``.

Sections run one after another on the same machine (stack tax, routing gain, simulator fidelity,
autoscaling, default max_running_requests vs a sweep); each reports "not measured: <reason>" rather
than a number when a piece is missing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.client import Spec
from bench.procs import ROOT


def stack_tax(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
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
    low = Spec(**{**spec.__dict__, "concurrency": st.LOW_CONCURRENCY, "warmup": 8})
    out = st.run(spec, logs / "stack_tax", args.arms, rates=args.event_rates, low=low, profile=args.profile)
    return {"status": "measured", **out}


def routing(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
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


def fidelity(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from bench import fidelity as fd

    return fd.run()


def autoscaling(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
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


def llama_builds(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from bench import llama_builds as lb

    return lb.run(logs / "llama_builds", seconds=20.0)


def admission(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from bench import admission as ad

    return ad.run()


def fair_queuing(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    import asyncio

    from bench import fair_queuing as fq

    return {"status": "measured", **asyncio.run(fq.run(15.0 if args.quick else 30.0, 2, 10))}


def limits(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from bench import limits as lm

    tokens = args.max_tokens or (32 if args.quick else 128)
    return lm.run(logs, seconds=20.0, concurrency=args.concurrency, max_tokens=tokens)


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "stack_tax": stack_tax,
    "routing": routing,
    "fidelity": fidelity,
    "autoscaling": autoscaling,
    "llama_builds": llama_builds,
    "admission": admission,
    "fair_queuing": fair_queuing,
    "limits": limits,
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer requests, shorter steps)")
    p.add_argument("--only", type=lambda v: v.split(","), default=None, help=f"sections: {','.join(SECTIONS)}")
    p.add_argument("--arms", type=lambda v: v.split(","), default=None, help="stack-tax arms, e.g. a,b0,c")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--requests", type=int, default=None, help="stack tax: a fixed request count per arm instead of --seconds"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="stack tax: measured seconds per window (default 20; quick 5)"
    )
    p.add_argument(
        "--event-rates", type=lambda v: v.split(","), default=None, help="stack tax: mtp,token (default both)"
    )
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="py-spy our stack arm even when its goals are met")
    p.add_argument("--time-scale", type=float, default=1.0, help="routing: simulator time scale")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--name", default=None, help="results file stem (default: latest, or quick with --quick)")
    ns = p.parse_args(argv)
    unknown = [s for s in ns.only or [] if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return ns


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
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
    for name, fn in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        try:
            result["sections"][name] = fn(args, logs)
        except Exception as exc:
            traceback.print_exc()
            result["sections"][name] = {"status": f"not measured: {type(exc).__name__}: {exc}"}
    result["load_after"] = report.load_average()
    result["duration_s"] = time.monotonic() - started
    md, js = report.write(result, args.out, args.name or ("quick" if args.quick else "latest"))
    print(f"wrote {md} and {js} ({result['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
