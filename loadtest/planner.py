"""Capacity planner: from a target (peak requests/s, scenario, SLO, headroom) to replicas, GPUs,
$/month and a Helm values file.

Two sources of per-replica capacity:

* **model** — before any GPU is rented: the simulator's analytic timing model
  (:mod:`serving.capacity.timing`, extended to pipelines by :mod:`serving.capacity.pipeline`)
  predicts TTFT / TPOT / throughput of one replica at each batch size for every candidate
  (engine × GPU type × TP × PP × bf16/FP8 × MTP on/off). Steady state at batch ``B`` with mean
  prompt ``I`` and output ``O`` tokens: TPOT = decode_round(B, B·(I + O/2)) ÷ tokens per step ÷
  (1 − ρ), where ρ = λ·busy(I) is the share of (each stage's) GPU time prefills take; TTFT =
  prefill(I) + one decode round + the M/D/1 wait of a prefill queue, ρ·busy(I) / (2(1 − ρ));
  λ = B / (TTFT + (O − 1)·TPOT). With PP = 1, busy = prefill and the round is the TP step. The
  largest ``B`` that fits in memory and meets both objectives gives the replica's requests/s.
* **report** — after a measured sweep: the SLO point's throughput ÷ the replicas that ran.

Replicas = ⌈target × (1 + headroom) ÷ per-replica requests/s⌉; the cheapest candidate wins. A
candidate the settings tree refuses (TP not dividing the heads, ranks not filling the nodes, PP with
MTP, memory fit) is skipped with the reason.

**$/M tokens at the SLO point**: one replica running at its SLO-point load (the capacity above)
costs GPUs × $/GPU-h; the share ρ of its GPU time spent in prefills is charged to input tokens, the
rest to output tokens (:func:`loadtest.cost.split_by_gpu_time`), and ``usd_per_million_output_all``
charges it all to output. These are unit prices of a busy replica; at the planned peak the fleet
runs at ``utilisation`` = target ÷ (replicas × capacity), so its price per token is that much higher.

**vLLM** candidates (``engine="vllm"``): what is modelled is what the project's vLLM plan
(:mod:`serving.engines.vllm`) fixes — ``--max-num-seqs`` is the same admission bound
(:func:`serving.config.resolved_max_running`), ``--speculative-config`` (MTP) only when the
candidate enables it, TP / PP as set, and the same settings validation. What is *not*: vLLM's own
step times — the timing model is calibrated to SGLang's published figures and is used as is, so a
vLLM candidate costs what the SGLang candidate of the same layout costs, and the tie goes to SGLang.
Measure it (``loadtest run`` against it, then ``--from-report … --engine vllm``) to plan on its own
numbers.

**Per answer token** (``per="answer-token"``): a thinking model first generates reasoning the user
never reads. Each request's output is then ``R`` mean reasoning + ``A`` mean answer tokens; the TTFT
objective applies to the *first answer token*, TTFT + R · TPOT; a replica's capacity is counted in
answer tokens/s (λ · A), the target too, and every option carries $/M answer tokens at the target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.cost import DEFAULT_INPUT_WEIGHT, HOURS_PER_MONTH, PriceTable, monthly_usd, split_by_gpu_time, token_cost
from loadtest.stats import Slo

DEFAULT_GPUS = ("h100", "h200", "b200")
DEFAULT_TPS = (1, 2, 4, 8)
DEFAULT_PPS = (1, 2)
ENGINES = ("sglang", "vllm")  # the GPU engines; the first wins a tie (its timing is the calibrated one)
PER_REQUEST, PER_ANSWER_TOKEN = "request", "answer-token"
PER = (PER_REQUEST, PER_ANSWER_TOKEN)
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0


def default_gpus_per_node() -> int:
    from serving.config.settings import ParallelismSettings

    return int(ParallelismSettings.model_fields["gpus_per_node"].default)


@dataclass(frozen=True)
class Candidate:
    model: str  # base preset: qwen3.6-27b | qwen3.6-35b-a3b
    gpu: str
    tp: int
    fp8: bool
    mtp: bool
    engine: str = ENGINES[0]
    pp: int = 1
    gpus_per_node: int = field(default_factory=default_gpus_per_node)

    @property
    def preset(self) -> str:
        return f"{self.model}-fp8" if self.fp8 else self.model

    @property
    def gpus(self) -> int:
        """GPUs of one replica (one engine instance)."""
        return self.tp * self.pp

    @property
    def nodes(self) -> int:
        """Nodes one replica spans: as few as hold its GPUs."""
        return max(1, -(-self.gpus // self.gpus_per_node))

    def label(self) -> str:
        layout = f"tp{self.tp}" + (f"×pp{self.pp}" if self.pp > 1 else "")
        where = f" ({self.nodes} nodes)" if self.nodes > 1 else ""
        prec, mtp = "fp8" if self.fp8 else "bf16", "on" if self.mtp else "off"
        return f"{self.engine} {self.gpu} {layout}{where} {prec} mtp={mtp}"


@dataclass
class Prediction:
    batch: int
    ttft_s: float
    tpot_s: float
    rps: float
    output_tokens_per_s: float
    ttfa_s: float = math.nan  # first answer token: TTFT + mean reasoning tokens × TPOT
    answer_tokens_per_s: float = 0.0
    prefill_share: float = 0.0  # ρ: share of (each stage's) GPU time spent in prefills
    bubble: float = 0.0  # pipeline: share of a decode round each stage sits idle


@dataclass
class Option:
    candidate: Candidate
    feasible: bool
    reason: str = ""
    per_replica_rps: float = 0.0
    batch: int = 0
    ttft_s: float = math.nan
    tpot_s: float = math.nan
    replicas: int = 0
    gpus: int = 0
    usd_per_month: float = math.inf
    settings: dict[str, Any] = field(default_factory=dict)
    per: str = PER_REQUEST  # what the plan was counted in: request | answer-token
    ttfa_s: float = math.nan  # predicted time to the first answer token
    per_replica_answer_tokens_per_s: float = 0.0
    usd_per_million_answer: float = math.nan  # $/month ÷ answer tokens a month at the target load
    # At the SLO point (one replica at its capacity), see the module's docstring:
    usd_per_million_input: float = math.nan
    usd_per_million_output: float = math.nan
    usd_per_million_output_all: float = math.nan  # everything charged to output tokens
    prefill_share: float = math.nan  # the share of GPU time charged to input (plans: ρ; reports: weight)
    utilisation: float = math.nan  # target ÷ (replicas × capacity): the fleet's load at peak
    bubble: float = 0.0  # pipeline bubble at the chosen batch
    basis: str = "model"  # model | report
    notes: list[str] = field(default_factory=list)  # what is modelled and how, for this candidate

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        c = self.candidate
        d["candidate"] = asdict(c) | {"preset": c.preset, "label": c.label(), "gpus": c.gpus, "nodes": c.nodes}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def candidate_settings(c: Candidate, *, replicas: int = 1, batch: int | None = None) -> dict[str, Any]:
    """The settings tree (as overrides) of one candidate: engine, layout, GPU type, MTP, replicas."""
    s: dict[str, Any] = {
        "model": {"preset": c.preset},
        "engine": {"kind": c.engine},
        "parallelism": {
            "tp": c.tp,
            "pp": c.pp,
            "nodes": c.nodes,
            "gpus_per_node": c.gpus_per_node,
            "gpu_type": c.gpu,
        },
        "speculative": {"enabled": c.mtp},
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
    }
    if batch:
        s["autoscaling"]["target_load_per_replica"] = float(batch)
    return s


def check_candidate(c: Candidate) -> str:
    """'' when the settings tree accepts the candidate and the timing model covers it, else why not."""
    from serving.config import ConfigError, load_settings

    if c.engine not in ENGINES:
        return f"engine.kind: {c.engine!r} is not a GPU engine the planner models; use one of {', '.join(ENGINES)}"
    try:
        load_settings(overrides=candidate_settings(c), env={})
    except ConfigError as exc:
        return "; ".join(str(p) for p in exc.problems) or "refused by settings validation"
    if c.nodes > 1 and c.pp % c.nodes:
        return (
            f"parallelism.nodes: tp={c.tp} × pp={c.pp} over {c.nodes} nodes of {c.gpus_per_node} GPUs puts a TP group "
            "across nodes, which the timing model does not cover (all-reduces over the node interconnect); "
            "keep tp ≤ gpus_per_node and pp a multiple of the nodes"
        )
    return ""


def candidate_notes(c: Candidate) -> list[str]:
    """What is modelled, and how, for this candidate (printed under the table, kept in JSON)."""
    notes = []
    if c.engine == "vllm":
        notes.append(
            "vllm: admission (--max-num-seqs) and MTP (--speculative-config only when enabled) as the project's plan "
            "sets them; step times from the SGLang-calibrated model (vLLM's own are not modelled: measure, then "
            "--from-report --engine vllm)"
        )
    if c.pp > 1:
        notes.append(
            f"pp{c.pp}: {c.pp} microbatches in a ring (SGLang's default), stage pass = TP step ÷ pp, activation hops "
            "over NVLink / 50 GB/s NICs between nodes, bubble when fewer running than stages; prompts not "
            "chunk-pipelined (TTFT conservative)"
        )
    return notes


def predict(
    c: Candidate,
    *,
    prompt_tokens: float,
    output_tokens: float,
    batch: int,
    mtp_accept: float,
    reasoning_tokens: float = 0.0,
) -> Prediction:
    """Steady-state TTFT / TPOT / requests/s of one replica running ``batch`` requests.
    ``output_tokens`` is everything generated; ``reasoning_tokens`` of it (mean) come first."""
    from serving.capacity.pipeline import PipelineTiming
    from serving.capacity.timing import Deployment

    d = Deployment.of(
        c.preset, gpu=c.gpu, tp=c.tp, pp=c.pp, draft_tokens=4 if c.mtp else None, accept_length=mtp_accept
    )
    m = PipelineTiming(d, nodes=c.nodes)
    i, o = int(prompt_tokens), max(1.0, output_tokens)
    context = int(batch * (i + o / 2))
    step = m.decode_step_s(batch, context)
    prefill, busy = m.prefill_s(i), m.prefill_busy_s(i)
    base_tpot = step / m.tokens_per_step
    # Fixed point: the arrival rate sets the prefill share, which slows decoding, which sets the rate.
    rho = 0.0
    for _ in range(50):
        tpot = base_tpot / max(1e-9, 1 - rho)
        ttft = prefill + step + (rho * busy / (2 * (1 - rho)) if rho < 1 else math.inf)
        lam = batch / (ttft + (o - 1) * tpot)
        new_rho = min(0.999, lam * busy)
        if abs(new_rho - rho) < 1e-9:
            break
        rho = new_rho
    r = min(max(0.0, reasoning_tokens), o - 1)  # at least one answer token
    return Prediction(batch, ttft, tpot, lam, lam * o, ttft + r * tpot, lam * (o - r), rho, m.bubble(batch, context))


def max_batch(c: Candidate, prompt_tokens: float, output_tokens: float) -> int:
    """Running requests one replica admits: the launch plan's ``--max-running-requests`` (SGLang's
    state slots and KV token pool, :mod:`serving.capacity`), and no more than the pool holds at
    this workload's lengths."""
    from serving.config import load_settings, resolved_max_running
    from serving.config.validation import settings_fit

    s = load_settings(overrides=candidate_settings(c), env={})
    pool = settings_fit(s, running=None).cap.kv_pool_tokens
    return min(resolved_max_running(s), pool // max(1, int(prompt_tokens + output_tokens)))


def evaluate(
    c: Candidate,
    *,
    target_rps: float,
    headroom: float,
    slo: Slo,
    prompt_tokens: float,
    output_tokens: float,
    prices: PriceTable,
    mtp_accept: float = 2.8,
    reasoning_tokens: float = 0.0,
    per: str = PER_REQUEST,
) -> Option:
    """``target_rps`` requests/s at peak (with ``per="answer-token"`` the caller converts its answer
    tokens/s target: ÷ mean answer tokens per request)."""
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, got {per!r}")
    reason = check_candidate(c)
    if reason:
        return Option(c, False, reason)
    limit = max_batch(c, prompt_tokens, output_tokens)
    if limit < 1:
        return Option(c, False, "not even one request fits in memory")
    best: Prediction | None = None
    work = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "reasoning_tokens": reasoning_tokens}
    b = 1
    while b <= limit:
        p = predict(c, batch=b, mtp_accept=mtp_accept, **work)
        first = p.ttfa_s if per == PER_ANSWER_TOKEN else p.ttft_s
        if first <= slo.ttft_s and p.tpot_s <= slo.tpot_s:
            best = p
        elif best is not None:
            break  # latency only grows with the batch from here
        if b == limit:
            break
        b = min(limit, b + 1 if b < 8 else int(b * 1.25) + 1)  # the limit itself is tried last
    if best is None:
        p1 = predict(c, batch=1, mtp_accept=mtp_accept, **work)
        why = f"first answer token {p1.ttfa_s:.3f} s" if per == PER_ANSWER_TOKEN else f"TTFT {p1.ttft_s:.3f} s"
        return Option(c, False, f"misses the SLO even at batch 1 ({why}, TPOT {p1.tpot_s * 1e3:.1f} ms)", per=per)
    replicas = max(1, math.ceil(target_rps * (1 + headroom) / best.rps))
    gpus = replicas * c.gpus
    usd = monthly_usd(gpus, prices.price(c.gpu))
    answer_per_request = best.answer_tokens_per_s / best.rps if best.rps > 0 else 0.0
    answer_a_month = target_rps * answer_per_request * SECONDS_PER_MONTH
    unit = split_by_gpu_time(c.gpus * prices.price(c.gpu), best.rps, prompt_tokens, max(1.0, output_tokens),
                             best.prefill_share)  # fmt: skip
    return Option(
        c,
        True,
        per_replica_rps=best.rps,
        batch=best.batch,
        ttft_s=best.ttft_s,
        tpot_s=best.tpot_s,
        replicas=replicas,
        gpus=gpus,
        usd_per_month=usd,
        settings=candidate_settings(c, replicas=replicas, batch=best.batch),
        per=per,
        ttfa_s=best.ttfa_s,
        per_replica_answer_tokens_per_s=best.answer_tokens_per_s,
        usd_per_million_answer=usd / answer_a_month * 1e6 if answer_a_month > 0 else math.nan,
        usd_per_million_input=unit.usd_per_million_input,
        usd_per_million_output=unit.usd_per_million_output,
        usd_per_million_output_all=unit.usd_per_million_output_all,
        prefill_share=unit.prefill_share,
        utilisation=target_rps / (replicas * best.rps),
        bubble=best.bubble,
        notes=candidate_notes(c),
    )


def plan_from_model(
    *,
    model: str,
    target_rps: float,
    headroom: float,
    slo: Slo,
    prompt_tokens: float,
    output_tokens: float,
    prices: PriceTable,
    gpus: tuple[str, ...] = DEFAULT_GPUS,
    tps: tuple[int, ...] = DEFAULT_TPS,
    precisions: tuple[bool, ...] = (False, True),
    mtp: tuple[bool, ...] = (False, True),
    mtp_accept: float = 2.8,
    reasoning_tokens: float = 0.0,
    per: str = PER_REQUEST,
    pps: tuple[int, ...] = (1,),
    engines: tuple[str, ...] = (ENGINES[0],),
    gpus_per_node: int | None = None,
) -> list[Option]:
    """Every candidate (engine × GPU × TP × PP × precision × MTP), cheapest feasible first (ties:
    fewer GPUs, more per-replica capacity, SGLang before vLLM, fewer stages)."""
    if target_rps <= 0 or headroom < 0:
        raise ValueError("target requests/s must be > 0 and headroom ≥ 0")
    per_node = gpus_per_node or default_gpus_per_node()
    opts = [
        evaluate(
            Candidate(model, g, tp, fp8, m, engine, pp, per_node),
            target_rps=target_rps,
            headroom=headroom,
            slo=slo,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            prices=prices,
            mtp_accept=mtp_accept,
            reasoning_tokens=reasoning_tokens,
            per=per,
        )
        for engine in engines
        for g in gpus
        for tp in tps
        for pp in pps
        for fp8 in precisions
        for m in mtp
    ]
    return sorted(opts, key=rank)


def rank(o: Option) -> tuple[Any, ...]:
    c = o.candidate
    engine = ENGINES.index(c.engine) if c.engine in ENGINES else len(ENGINES)
    return (not o.feasible, o.usd_per_month, o.gpus, -o.per_replica_rps, engine, c.pp)


def plan_from_report(
    report: dict[str, Any],
    *,
    target_rps: float,
    headroom: float,
    candidate: Candidate,
    prices: PriceTable,
    per: str = PER_REQUEST,
    target_answer_tps: float | None = None,
    slo: Slo | None = None,
) -> Option:
    """Replicas for the target from a measured report's SLO point (its throughput ÷ replicas run).

    ``per="answer-token"``: the level used is the one with the most answer tokens/s among those
    without errors whose *first answer token* and TPOT met ``slo`` (default: the report's) at the
    report's percentile; capacity is its answer tokens/s ÷ replicas, against ``target_answer_tps``
    (default: ``target_rps`` × its answer tokens per request)."""
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, got {per!r}")
    point = report.get("slo_point") if per == PER_REQUEST else _first_answer_point(report, slo)
    if not point:
        what = "SLO" if per == PER_REQUEST else "SLO on the first answer token"
        return Option(candidate, False, f"the report has no load level that met the {what}", per=per)
    cost = report["points"][point["index"]].get("cost") or {}
    ran = int(cost.get("replicas") or 1)
    per_replica = point["throughput_rps"] / ran
    answer_tps = float(point.get("answer_tokens_per_s") or 0.0)
    per_replica_answer = answer_tps / ran
    if per == PER_ANSWER_TOKEN:
        if per_replica_answer <= 0:
            return Option(candidate, False, "the report's SLO point measured no answer tokens", per=per)
        target_answer = (
            target_answer_tps if target_answer_tps is not None else target_rps * answer_tps / point["throughput_rps"]
        )
        replicas = max(1, math.ceil(target_answer * (1 + headroom) / per_replica_answer))
    else:
        target_answer = target_rps * (answer_tps / point["throughput_rps"]) if point["throughput_rps"] else 0.0
        replicas = max(1, math.ceil(target_rps * (1 + headroom) / per_replica))
    gpus = replicas * candidate.gpus
    usd = monthly_usd(gpus, prices.price(candidate.gpu))
    unit = _measured_prices(report["points"][point["index"]], candidate, prices, ran)
    served, capacity = (target_answer, per_replica_answer) if per == PER_ANSWER_TOKEN else (target_rps, per_replica)
    utilisation = served / (replicas * capacity)
    return Option(
        candidate,
        True,
        per_replica_rps=per_replica,
        batch=int(point["load"]) if report["run"]["mode"] == "concurrency" else 0,
        replicas=replicas,
        gpus=gpus,
        usd_per_month=usd,
        settings=candidate_settings(candidate, replicas=replicas),
        per=per,
        per_replica_answer_tokens_per_s=per_replica_answer,
        usd_per_million_answer=usd / (target_answer * SECONDS_PER_MONTH) * 1e6 if target_answer > 0 else math.nan,
        usd_per_million_input=unit[0],
        usd_per_million_output=unit[1],
        usd_per_million_output_all=unit[2],
        prefill_share=unit[3],
        utilisation=utilisation,
        basis="report",
    )


def _measured_prices(
    p: dict[str, Any], c: Candidate, prices: PriceTable, replicas: int
) -> tuple[float, float, float, float]:
    """$/M input, $/M output, $/M output (all on output) and the input share of the bill at a
    measured level: its GPU-hours (as measured, else its duration × the replicas × GPUs that ran)
    at this plan's price, split by the report's input weight (:func:`loadtest.cost.token_cost`)."""
    cost = p.get("cost") or {}
    hours = float(cost.get("gpu_hours") or 0.0) or float(p.get("duration_s") or 0.0) / 3600 * replicas * c.gpus
    tin, tout = int(p.get("prompt_tokens") or 0), int(p.get("completion_tokens") or 0)
    if hours <= 0 or tout <= 0:
        return math.nan, math.nan, math.nan, math.nan
    tc = token_cost(hours, prices.price(c.gpu), tin, tout, float(cost.get("input_weight") or DEFAULT_INPUT_WEIGHT))
    p_in, p_out = tc.usd_per_million_input or 0.0, tc.usd_per_million_output or 0.0
    return p_in, p_out, tc.total_usd / tout * 1e6, p_in * tin / (p_in * tin + p_out * tout) if p_out else 0.0


def _first_answer_point(report: dict[str, Any], slo: Slo | None) -> dict[str, Any] | None:
    rs = report.get("slo") or {}
    ttft = slo.ttft_s if slo is not None else float(rs.get("ttft_s", Slo().ttft_s))
    tpot = slo.tpot_s if slo is not None else float(rs.get("tpot_s", Slo().tpot_s))
    q = f"p{float(rs.get('percentile', Slo().percentile)):g}"
    best: dict[str, Any] | None = None
    for i, p in enumerate(report.get("points") or ()):
        first, step = (p.get("ttfa_s") or {}).get(q), (p.get("tpot_s") or {}).get(q)
        if p.get("errors") or not p.get("requests") or first is None or first > ttft or (step or 0.0) > tpot:
            continue
        if best is None or p.get("answer_tokens_per_s", 0.0) > best["answer_tokens_per_s"]:
            best = {"index": i, "load": p["load"], "throughput_rps": p["throughput_rps"],
                    "answer_tokens_per_s": p.get("answer_tokens_per_s", 0.0)}  # fmt: skip
    return best


def helm_values(
    opt: Option, chart_defaults: dict[str, Any] | None = None, image: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A values file for helm/qwen-serve: the chart's default ``settings`` with the plan's merged
    in (engine kind, TP, PP, nodes, GPU type, MTP, replicas), one worker group for the chosen GPU
    type (lists replace, they do not merge, in Helm) and, when given, the engine's ``image``
    (:func:`engine_image`)."""
    from serving.config.hardware import GPU_PROFILES, GpuType

    settings: dict[str, Any] = _merge(dict((chart_defaults or {}).get("settings") or {}), opt.settings)
    groups = (chart_defaults or {}).get("workerGroups") or [{}]
    group = dict(groups[0]) | {
        "name": opt.candidate.gpu,
        "gpuProduct": GPU_PROFILES[GpuType(opt.candidate.gpu)].k8s_product_label,
    }
    out: dict[str, Any] = {"settings": settings, "workerGroups": [group]}
    if image:  # the whole block: the chart's image with the engine's fields over it
        out = {"image": dict((chart_defaults or {}).get("image") or {}) | image} | out
    return out


def engine_image(chart_dir: Path, engine: str) -> dict[str, Any] | None:
    """The ``image`` block of the chart's profile for ``engine`` (the vLLM image is the chart's
    ``values-vllm-*.yaml`` profile's, not restated here); None for the chart's default engine."""
    import yaml

    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8")) or {}
    if ((defaults.get("settings") or {}).get("engine") or {}).get("kind") == engine:
        return None
    for path in sorted(chart_dir.glob("values-*.yaml")):
        v = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if ((v.get("settings") or {}).get("engine") or {}).get("kind") == engine and v.get("image"):
            return dict(v["image"])
    raise ValueError(f"no profile in {chart_dir} runs engine.kind={engine} with its own image; add one (values-*.yaml)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
