"""``loadtest`` — run sweeps, rebuild reports, plan capacity, or hand over to Locust itself.

Every bad input ends in one message naming the option and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from loadtest.cost import PriceTable, load_prices
from loadtest.scenarios import ScenarioError, load_scenario
from loadtest.stats import Slo
from serving.cli.errors import FAILED, exits_on, fail

app = typer.Typer(help="Locust load tests, reports and capacity plans for OpenAI-compatible endpoints.",
                  no_args_is_help=True)  # fmt: skip

SloTtft = Annotated[float, typer.Option("--slo-ttft", help="TTFT objective, seconds", min=0.0)]
SloTpot = Annotated[float, typer.Option("--slo-tpot", help="TPOT objective, seconds", min=0.0)]
SloPct = Annotated[float, typer.Option("--slo-percentile", help="percentile the objectives apply to", min=0, max=100)]
PriceOpt = Annotated[list[str] | None, typer.Option("--price", help="override $/GPU-hour, e.g. --price h100=2.5")]
PricesFile = Annotated[Path | None, typer.Option("--prices", help="YAML price table (format of data/gpu_prices.yaml)")]


clear_errors = exits_on(ValueError, ScenarioError, FileNotFoundError)


def _prices(path: Path | None, items: list[str] | None) -> PriceTable:
    return load_prices(path).with_overrides(items)


def _levels(raw: str) -> list[float]:
    try:
        levels = [float(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--levels {raw!r}: expected comma-separated numbers, e.g. 1,4,16") from None
    if not levels or any(x <= 0 for x in levels):
        raise ValueError("--levels: give at least one positive number")
    return levels


def _gpu_source(kind: str, *, replicas: int, gpus_per_replica: int, gpu_type: str, namespace: str,
                dashboard_url: str, app_name: str) -> Any:  # fmt: skip
    from loadtest.gpu_usage import KubernetesUsage, RayServeUsage, StaticUsage

    sources: dict[str, Callable[[], Any]] = {
        "static": lambda: StaticUsage(replicas, gpus_per_replica, gpu_type),
        "ray": lambda: RayServeUsage(gpus_per_replica, gpu_type, app=app_name, dashboard_url=dashboard_url),
        "k8s": lambda: KubernetesUsage(namespace, gpu_type),
        "none": lambda: None,
    }
    if kind not in sources:
        raise ValueError(f"--gpu-source {kind!r}: choose one of {', '.join(sources)}")
    return sources[kind]()


@app.command("run")
@clear_errors
def run(
    host: Annotated[str, typer.Option(help="OpenAI-compatible base URL (engine or gateway)")],
    scenario: Annotated[
        str, typer.Option(help="built-in (chat, coding_agent, rag, long_context, agent_thinking, vision) or YAML file")
    ] = "chat",
    model: Annotated[str, typer.Option(help="model name sent in requests")] = "qwen3.6-27b",
    api_key: Annotated[str | None, typer.Option(envvar="LOADTEST_API_KEY", help="bearer key")] = None,
    mode: Annotated[str, typer.Option(help="concurrency (closed loop) | rate (open loop, Poisson)")] = "concurrency",
    levels: Annotated[str, typer.Option(help="comma-separated concurrencies or requests/s")] = "1,4,16",
    duration: Annotated[float, typer.Option(help="measured seconds per level", min=0.1)] = 60.0,
    warmup: Annotated[float, typer.Option(help="warm-up seconds per level (not measured)", min=0.0)] = 10.0,
    max_in_flight: Annotated[int, typer.Option(help="open loop: most requests in flight", min=1)] = 256,
    out: Annotated[Path, typer.Option(help="run directory for records and report")] = Path("runs/latest"),
    slo_ttft: SloTtft = 1.0,
    slo_tpot: SloTpot = 0.050,
    slo_percentile: SloPct = 95.0,
    price: PriceOpt = None,
    prices: PricesFile = None,
    gpu_source: Annotated[str, typer.Option(help="static | ray | k8s | none")] = "static",
    replicas: Annotated[int, typer.Option(help="static: replicas running", min=0)] = 1,
    gpus_per_replica: Annotated[int, typer.Option(help="static/ray: GPUs per replica", min=0)] = 1,
    gpu_type: Annotated[str, typer.Option(help="GPU type for prices")] = "h100",
    namespace: Annotated[str, typer.Option(help="k8s: namespace of the release")] = "default",
    dashboard_url: Annotated[str, typer.Option(help="ray: Ray dashboard URL")] = "http://127.0.0.1:8265",
    app_name: Annotated[str, typer.Option(help="ray: Serve application name")] = "qwen-serve",
    seed: Annotated[int, typer.Option(help="workload random seed")] = 0,
    progress: Annotated[bool, typer.Option(help="rich progress bars")] = True,
) -> None:
    """Sweep load levels headless in this process, then write report.{json,png,html}."""
    if mode not in ("concurrency", "rate"):
        raise ValueError(f"--mode {mode!r}: choose concurrency or rate")
    sc = load_scenario(scenario)
    table = _prices(prices, price)
    lv = _levels(levels)
    if mode == "concurrency" and any(x != int(x) for x in lv):
        raise ValueError("--levels: concurrencies must be whole numbers")
    src = _gpu_source(gpu_source, replicas=replicas, gpus_per_replica=gpus_per_replica, gpu_type=gpu_type,
                      namespace=namespace, dashboard_url=dashboard_url, app_name=app_name)  # fmt: skip
    from loadtest.report import build_report, write_report
    from loadtest.runner import Mode, run_sweep
    from loadtest.user import UserConfig

    cfg = UserConfig(scenario=sc, model=model, api_key=api_key, seed=seed)
    run_sweep(host, cfg, out, mode=Mode(mode), levels=lv, duration_s=duration, warmup_s=warmup,
              max_in_flight=max_in_flight, gpu_source=src, show_progress=progress)  # fmt: skip
    rep = build_report(out, slo=Slo(slo_ttft, slo_tpot, slo_percentile), prices=table)
    paths = write_report(rep, out)
    _print_summary(rep.to_json())
    typer.echo(" ".join(str(p) for p in paths.values()))


def _print_summary(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    q = f"p{rep['slo']['percentile']:g}"
    t = Table(title=f"{rep['run']['scenario']} — {rep['run']['mode']} sweep")
    heads = ("load", "req/s", "out tok/s", "answer tok/s", "goodput", f"TTFT {q} ms", f"1st answer {q} ms",
             f"TPOT {q} ms", "SLO", "$/M out", "$/M answer")  # fmt: skip
    for h in heads:
        t.add_column(h, justify="right")
    for p in rep["points"]:
        ms = [(p[k].get(q) or float("nan")) * 1000 for k in ("ttft_s", "ttfa_s", "tpot_s")]
        c = [p["cost"].get(k) for k in ("usd_per_million_output", "usd_per_million_answer")]
        t.add_row(f"{p['load']:g}", f"{p['throughput_rps']:.2f}", f"{p['output_tokens_per_s']:.0f}",
                  f"{p['answer_tokens_per_s']:.0f}", f"{p['goodput_rps']:.2f}", f"{ms[0]:.1f}", f"{ms[1]:.1f}",
                  f"{ms[2]:.1f}", "yes" if p["meets_slo"] else "no",
                  *("–" if x is None else f"{x:.3f}" for x in c))  # fmt: skip
    Console(stderr=True).print(t)


@app.command("report")
@clear_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="directory with records.jsonl and run.json")],
    slo_ttft: SloTtft = 1.0,
    slo_tpot: SloTpot = 0.050,
    slo_percentile: SloPct = 95.0,
    price: PriceOpt = None,
    prices: PricesFile = None,
) -> None:
    """Rebuild the report of a run with other objectives or prices."""
    from loadtest.report import build_report, write_report
    from loadtest.runmeta import RUN_META

    if not (run_dir / RUN_META).is_file():
        raise ValueError(f"{run_dir}: no {RUN_META} (not a run directory)")
    rep = build_report(run_dir, slo=Slo(slo_ttft, slo_tpot, slo_percentile), prices=_prices(prices, price))
    paths = write_report(rep, run_dir)
    _print_summary(rep.to_json())
    typer.echo(" ".join(str(p) for p in paths.values()))


def _csv(raw: str, cast: Callable[[str], Any], name: str) -> tuple[Any, ...]:
    try:
        return tuple(cast(x.strip()) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{name} {raw!r}: expected a comma-separated list") from None


def _onoff(x: str) -> bool:
    if x not in ("on", "off"):
        raise ValueError(x)
    return x == "on"


PLAN_FORMATS = ("text", "markdown", "json")


@app.command("plan")
@clear_errors
def plan(
    rps: Annotated[float | None, typer.Option(help="peak requests/s to serve", min=0.0)] = None,
    answer_tps: Annotated[
        float | None, typer.Option("--answer-tps", help="peak answer tokens/s to serve (instead of --rps)", min=0.0)
    ] = None,
    per: Annotated[
        str,
        typer.Option(
            help="plan per request, or per answer-token: the TTFT objective holds for the first answer token, "
            "capacity and $ are counted in answer tokens (reasoning excluded)"
        ),
    ] = "request",
    reasoning_share: Annotated[
        float,
        typer.Option(
            help="share of a thinking request's output that is reasoning, when the scenario has no reasoning_tokens",
            min=0.0,
            max=1.0,
        ),
    ] = 0.5,
    scenario: Annotated[str, typer.Option(help="workload: built-in name or YAML file")] = "chat",
    model: Annotated[str, typer.Option(help="qwen3.6-27b | qwen3.6-35b-a3b")] = "qwen3.6-27b",
    headroom: Annotated[float, typer.Option(help="spare capacity at peak, e.g. 0.2 = 20 %", min=0.0)] = 0.2,
    slo_ttft: SloTtft = 1.0,
    slo_tpot: SloTpot = 0.050,
    engines: Annotated[
        str, typer.Option(help="engines to consider: sglang,vllm (vLLM's step times are SGLang's model: see below)")
    ] = "sglang,vllm",
    gpus: Annotated[str, typer.Option(help="GPU types to consider")] = "h100,h200,b200",
    tps: Annotated[str, typer.Option(help="tensor-parallel sizes to consider")] = "1,2,4,8",
    pps: Annotated[str, typer.Option(help="pipeline-parallel sizes to consider (stages; pp > 1 excludes MTP)")] = "1,2",
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node (default: the settings' parallelism.gpus_per_node)", min=1)
    ] = None,
    precisions: Annotated[str, typer.Option(help="bf16,fp8 (with --from-report: fp8 if the run was FP8)")] = "bf16,fp8",
    mtp: Annotated[
        str, typer.Option(help="MTP settings to consider: on,off (with --from-report: on if it ran)")
    ] = "off,on",
    from_report: Annotated[
        Path | None, typer.Option(help="report.json of a measured sweep instead of the model")
    ] = None,
    gpu: Annotated[str, typer.Option(help="with --from-report: GPU type that ran")] = "h100",
    tp: Annotated[int, typer.Option(help="with --from-report: TP that ran", min=1)] = 1,
    pp: Annotated[int, typer.Option(help="with --from-report: PP that ran", min=1)] = 1,
    engine: Annotated[str, typer.Option(help="with --from-report: engine that ran (sglang | vllm)")] = "sglang",
    values_out: Annotated[Path | None, typer.Option(help="write Helm values for helm/qwen-serve here")] = None,
    price: PriceOpt = None,
    prices: PricesFile = None,
    output_format: Annotated[str, typer.Option("--format", help="text | markdown | json")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="same as --format json: every option")] = False,
    limit: Annotated[int, typer.Option(help="text/markdown: rows of feasible options shown (0: all)", min=0)] = 20,
) -> None:
    """Replicas, GPUs, $/month and $/M tokens for a target load; the cheapest configuration
    meeting the SLO (marked *), written as Helm values with --values-out.

    \b
    Columns (text, markdown; every field with --format json):
      engine gpu layout   engine kind, GPU type, tp×pp (nodes a replica spans)
      prec mtp            bf16 / fp8 weights, MTP speculative decoding
      replicas GPUs       for peak × (1 + headroom); GPUs = replicas × tp × pp
      $/month             GPUs × $/GPU-hour × 730 h
      req/s/rep batch     a replica's capacity at the SLO point, its batch there
      TTFT ms TPOT ms     predicted at that batch
      $/M in  $/M out     at the SLO point (one replica at its capacity): GPU
                          time in prefills → input, in decode steps → output
                          (from a report: split by the report's input weight)
      $/M out all         every GPU-hour charged to output (input free)
      util                fleet load at peak, target ÷ (replicas × capacity);
                          $/M at peak = $/M above ÷ util
      bubble              pp > 1: idle share of each stage in a decode round
      answer tok/s/rep    --per answer-token: answer tokens/s per replica,
      $/M answer          and $/M answer tokens at the target

    \b
    Modelled: SGLang by the timing model calibrated to its published figures;
    PP as microbatches in a ring with inter-stage transfers
    (serving/capacity/pipeline.py); vLLM by the project's plan (admission,
    MTP only when enabled) with SGLang's step times, not vLLM's own: it ties
    with SGLang (rows folded) and SGLang is chosen. Refused candidates
    (settings validation, a TP group across nodes) are counted by field.
    """
    from loadtest.planner import PER, PER_ANSWER_TOKEN, Candidate, plan_from_model, plan_from_report

    if per not in PER:
        raise ValueError(f"--per {per!r}: choose one of {', '.join(PER)}")
    fmt = "json" if as_json else output_format
    if fmt not in PLAN_FORMATS:
        raise ValueError(f"--format {output_format!r}: choose one of {', '.join(PLAN_FORMATS)}")
    if (rps is None) == (answer_tps is None):
        raise ValueError("give exactly one target: --rps or --answer-tps")
    if (rps is not None and rps <= 0) or (answer_tps is not None and answer_tps <= 0):
        raise ValueError("--rps / --answer-tps must be > 0")
    if model not in ("qwen3.6-27b", "qwen3.6-35b-a3b"):
        raise ValueError("--model: qwen3.6-27b or qwen3.6-35b-a3b (FP8 is a candidate dimension)")
    table = _prices(prices, price)
    slo = Slo(slo_ttft, slo_tpot)
    if from_report is not None:
        data = json.loads(from_report.read_text(encoding="utf-8"))
        point = data.get("slo_point") or {}
        target = rps if rps is not None else 0.0
        if rps is None and point.get("answer_tokens_per_s"):  # answer tokens per request, as measured
            target = float(answer_tps or 0.0) * point["throughput_rps"] / point["answer_tokens_per_s"]
        ran = Candidate(model, gpu, tp, precisions == "fp8", mtp == "on", _engines(engine, "--engine")[0], pp)
        opts = [plan_from_report(data, target_rps=target, headroom=headroom, prices=table, per=per,
                                 target_answer_tps=answer_tps, slo=slo, candidate=ran)]  # fmt: skip
    else:
        sc = load_scenario(scenario)
        prec = _csv(precisions, lambda x: {"bf16": False, "fp8": True}[x], "--precisions")
        reasoning, answer = _reasoning_and_answer(sc, reasoning_share)
        if rps is None and answer <= 0:
            raise ValueError("--answer-tps: the scenario's requests have no answer tokens")
        target = rps if rps is not None else float(answer_tps or 0.0) / answer
        if per == PER_ANSWER_TOKEN:
            typer.echo(f"per answer token: {reasoning:.0f} reasoning + {answer:.0f} answer tokens per request "
                       f"(mean), target {target:.3g} req/s", err=True)  # fmt: skip
        opts = plan_from_model(
            model=model, target_rps=target, headroom=headroom, slo=slo, prices=table,
            prompt_tokens=sc.prompt_tokens.mean() + sc.shared_prefix_tokens + sc.mean_image_tokens(),
            output_tokens=reasoning + answer,
            reasoning_tokens=reasoning, per=per,
            gpus=_csv(gpus, str, "--gpus"), tps=_positive(tps, "--tps"), precisions=prec,
            mtp=_csv(mtp, _onoff, "--mtp"), pps=_positive(pps, "--pps"), engines=_engines(engines, "--engines"),
            gpus_per_node=gpus_per_node,
        )  # fmt: skip
    best = opts[0]
    if fmt == "json":
        typer.echo(json.dumps([o.to_json() for o in opts], indent=2))
    else:
        typer.echo(_plan_table(opts, markdown=fmt == "markdown", limit=limit, answer=per == PER_ANSWER_TOKEN))
    if not best.feasible:
        fail("no configuration meets the SLO at this load", FAILED)
    if values_out is not None:
        peak = f"{rps:g} req/s" if rps is not None else f"{answer_tps:g} answer tokens/s"
        _write_values(best, values_out, per=per, peak=peak)


def _write_values(best: Any, out: Path, *, per: str, peak: str) -> None:
    from loadtest.planner import engine_image, helm_values
    from serving.deploy.paths import CHART_DIR

    chart = CHART_DIR / "values.yaml"
    defaults = yaml.safe_load(chart.read_text(encoding="utf-8")) if chart.is_file() else {}
    image = engine_image(CHART_DIR, best.candidate.engine) if chart.is_file() else None
    values = helm_values(best, defaults, image)
    header = (
        f"# capacity plan ({per}): {best.candidate.label()}, {best.replicas} replicas, {peak} peak\n"
        f"# at the SLO point: ${_num(best.usd_per_million_input)}/M input, ${_num(best.usd_per_million_output)}/M "
        f"output (GPU time split, {best.basis}), ${_num(best.usd_per_million_output_all)}/M output all on output\n"
    )
    out.write_text(header + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


def _positive(raw: str, name: str) -> tuple[int, ...]:
    got = _csv(raw, int, name)
    if not got or any(x < 1 for x in got):
        raise ValueError(f"{name} {raw!r}: give positive whole numbers, e.g. 1,2")
    return got


def _engines(raw: str, name: str) -> tuple[str, ...]:
    from loadtest.planner import ENGINES

    got = _csv(raw, lambda x: x.lower(), name)
    bad = [x for x in got if x not in ENGINES]
    if not got or bad:
        raise ValueError(f"{name} {raw!r}: choose from {', '.join(ENGINES)}")
    return got


def _reasoning_and_answer(sc: Any, reasoning_share: float) -> tuple[float, float]:
    """Mean (reasoning, answer) tokens per request of a scenario. With ``reasoning_tokens`` the
    answer is ``output_tokens`` and the reasoning comes on top; without, ``output_tokens`` is all
    of it and a thinking request spends ``reasoning_share`` of it on reasoning (an assumption)."""
    out = sc.output_tokens.mean()
    reasoning = sc.mean_reasoning_tokens()
    if reasoning is not None:
        return reasoning, out
    reasoning = sc.thinking_ratio * reasoning_share * out
    return reasoning, out - reasoning


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _layout(o: Any) -> str:
    c = o.candidate
    return f"tp{c.tp}×pp{c.pp}" + (f" ({c.nodes} nodes)" if c.nodes > 1 else "")


def _plan_columns(answer: bool) -> list[tuple[str, Callable[[Any], str]]]:
    cols: list[tuple[str, Callable[[Any], str]]] = [
        ("engine", lambda o: o.candidate.engine),
        ("gpu", lambda o: o.candidate.gpu),
        ("layout", _layout),
        ("prec", lambda o: "fp8" if o.candidate.fp8 else "bf16"),
        ("mtp", lambda o: "on" if o.candidate.mtp else "off"),
        ("replicas", lambda o: str(o.replicas)),
        ("GPUs", lambda o: str(o.gpus)),
        ("$/month", lambda o: f"{o.usd_per_month:,.0f}"),
        ("req/s/rep", lambda o: f"{o.per_replica_rps:.2f}"),
        ("batch", lambda o: str(o.batch)),
        ("TTFT ms", lambda o: _num(o.ttft_s * 1e3, 0)),
        ("TPOT ms", lambda o: _num(o.tpot_s * 1e3, 1)),
        ("$/M in", lambda o: _num(o.usd_per_million_input)),
        ("$/M out", lambda o: _num(o.usd_per_million_output)),
        ("$/M out all", lambda o: _num(o.usd_per_million_output_all)),
        ("util", lambda o: _num(o.utilisation, 2)),
        ("bubble", lambda o: f"{o.bubble:.1%}" if o.candidate.pp > 1 else "–"),
    ]
    if answer:
        cols += [("answer tok/s/rep", lambda o: f"{o.per_replica_answer_tokens_per_s:.0f}"),
                 ("$/M answer", lambda o: _num(o.usd_per_million_answer))]  # fmt: skip
    return cols


def _plan_table(opts: list[Any], *, markdown: bool, limit: int, answer: bool) -> str:
    """Feasible options (the first is the choice), vLLM rows folded into the SGLang row they equal,
    then the refused ones counted by the field that refused them."""
    cols = _plan_columns(answer)
    rows: list[list[str]] = []
    index: dict[tuple[str, ...], list[str]] = {}
    for o in (o for o in opts if o.feasible):
        cells = [f(o) for _, f in cols]
        key = tuple(cells[1:])  # everything but the engine
        if key in index:  # same numbers, other engine: one row
            index[key][0] += f", {o.candidate.engine}"
            continue
        index[key] = cells
        rows.append(cells)
    shown = rows if limit == 0 else rows[:limit]
    if shown:
        shown[0] = [("**" + shown[0][0] + "**") if markdown else ("* " + shown[0][0]), *shown[0][1:]]
    heads = [h for h, _ in cols]
    lines: list[str] = []
    if markdown:
        lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(r) + " |" for r in shown]
    else:
        widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(heads)]
        lines += ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in shown]
    if len(shown) < len(rows):
        lines.append(f"… {len(rows) - len(shown)} more feasible (--limit 0 shows all)")
    refused = [o for o in opts if not o.feasible]
    if refused:
        if not rows:  # nothing met the SLO: every reason in full
            lines += [f"refused: {o.candidate.label()}: {o.reason}" for o in refused]
        else:
            by_field: dict[str, list[Any]] = {}
            for o in refused:
                by_field.setdefault(o.reason.split(":", 1)[0] if ": " in o.reason else o.reason, []).append(o)
            summary = ", ".join(f"{k} ×{len(v)}" for k, v in sorted(by_field.items(), key=lambda kv: -len(kv[1])))
            lines.append(f"refused {len(refused)} (--format json lists each with its reason): {summary}")
    notes = sorted({n for o in opts if o.feasible for n in o.notes})
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


@app.command("locust", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def locust_cmd(ctx: typer.Context) -> None:
    """Locust's own CLI with loadtest's locustfile: web UI, --headless, --master / --worker.

    Example: loadtest locust --host http://127.0.0.1:8000 --scenario chat   (web UI on :8089)
    """
    locustfile = str(Path(__file__).with_name("locustfile.py"))
    args = list(ctx.args)
    if "-f" in args:  # add shapes after ours: -f loadtest/profiles/step.py
        i = args.index("-f")
        locustfile = f"{locustfile},{args[i + 1]}"
        del args[i : i + 2]
    os.execv(sys.executable, [sys.executable, "-m", "locust", "-f", locustfile, *args])


if __name__ == "__main__":
    app()
