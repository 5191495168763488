"""Capacity planner: from a target (peak requests/s, scenario, SLO, headroom) to replicas, GPUs,
$/month and a Helm values file.

Two sources of per-replica capacity:

* **model** — before any GPU is rented: the simulator's analytic timing model
  (:mod:`serving.capacity.timing`) predicts TTFT / TPOT / throughput of one replica at
  each batch size for every candidate (GPU type × TP × bf16/FP8 × MTP on/off). Steady state at
  batch ``B`` with mean prompt ``I`` and output ``O`` tokens:
  TPOT = decode_step(B, B·(I + O/2)) ÷ tokens per step ÷ (1 − ρ), where ρ = λ·prefill(I) is the
  share of GPU time prefills take; TTFT = prefill(I) + one decode step + the M/D/1 wait of a
  prefill queue, ρ·prefill(I) / (2(1 − ρ)); λ = B / (TTFT + (O − 1)·TPOT). The largest ``B`` that
  fits in memory and meets both objectives gives the replica's requests/s.
* **report** — after a measured sweep: the SLO point's throughput ÷ the replicas that ran.

Replicas = ⌈target × (1 + headroom) ÷ per-replica requests/s⌉; the cheapest candidate wins. A
candidate the settings tree refuses (TP not dividing the heads, memory fit) is skipped with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.cost import PriceTable, monthly_usd
from loadtest.stats import Slo

DEFAULT_GPUS = ("h100", "h200", "b200")
DEFAULT_TPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Candidate:
    model: str  # base preset: qwen3.6-27b | qwen3.6-35b-a3b
    gpu: str
    tp: int
    fp8: bool
    mtp: bool

    @property
    def preset(self) -> str:
        return f"{self.model}-fp8" if self.fp8 else self.model

    def label(self) -> str:
        return f"{self.gpu} tp{self.tp} {'fp8' if self.fp8 else 'bf16'} mtp={'on' if self.mtp else 'off'}"


@dataclass
class Prediction:
    batch: int
    ttft_s: float
    tpot_s: float
    rps: float
    output_tokens_per_s: float


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidate"] = asdict(self.candidate) | {"preset": self.candidate.preset, "label": self.candidate.label()}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def candidate_settings(c: Candidate, *, replicas: int = 1, batch: int | None = None) -> dict[str, Any]:
    """The settings tree (as overrides) of one candidate on SGLang."""
    s: dict[str, Any] = {
        "model": {"preset": c.preset},
        "engine": {"kind": "sglang"},
        "parallelism": {"tp": c.tp, "gpu_type": c.gpu},
        "speculative": {"enabled": c.mtp},
        "autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
    }
    if batch:
        s["autoscaling"]["target_load_per_replica"] = float(batch)
    return s


def check_candidate(c: Candidate) -> str:
    """'' when the settings tree accepts the candidate, else the first problem."""
    from serving.config import ConfigError, load_settings

    try:
        load_settings(overrides=candidate_settings(c), env={})
    except ConfigError as exc:
        return "; ".join(str(p) for p in exc.problems) or "refused by settings validation"
    return ""


def predict(c: Candidate, *, prompt_tokens: float, output_tokens: float, batch: int, mtp_accept: float) -> Prediction:
    """Steady-state TTFT / TPOT / requests/s of one replica running ``batch`` requests."""
    from serving.capacity.timing import Deployment, TimingModel

    d = Deployment.of(c.preset, gpu=c.gpu, tp=c.tp, draft_tokens=4 if c.mtp else None, accept_length=mtp_accept)
    m = TimingModel(d)
    i, o = int(prompt_tokens), max(1.0, output_tokens)
    step = m.decode_step_s(batch, int(batch * (i + o / 2)))
    prefill = m.prefill_s(i)
    base_tpot = step / m.tokens_per_step
    # Fixed point: the arrival rate sets the prefill share, which slows decoding, which sets the rate.
    rho = 0.0
    for _ in range(50):
        tpot = base_tpot / max(1e-9, 1 - rho)
        ttft = prefill + step + (rho * prefill / (2 * (1 - rho)) if rho < 1 else math.inf)
        lam = batch / (ttft + (o - 1) * tpot)
        new_rho = min(0.999, lam * prefill)
        if abs(new_rho - rho) < 1e-9:
            break
        rho = new_rho
    return Prediction(batch, ttft, tpot, lam, lam * o)


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
) -> Option:
    reason = check_candidate(c)
    if reason:
        return Option(c, False, reason)
    limit = max_batch(c, prompt_tokens, output_tokens)
    if limit < 1:
        return Option(c, False, "not even one request fits in memory")
    best: Prediction | None = None
    b = 1
    while b <= limit:
        p = predict(c, prompt_tokens=prompt_tokens, output_tokens=output_tokens, batch=b, mtp_accept=mtp_accept)
        if p.ttft_s <= slo.ttft_s and p.tpot_s <= slo.tpot_s:
            best = p
        elif best is not None:
            break  # latency only grows with the batch from here
        b = b + 1 if b < 8 else int(b * 1.25) + 1
    if best is None:
        p1 = predict(c, prompt_tokens=prompt_tokens, output_tokens=output_tokens, batch=1, mtp_accept=mtp_accept)
        return Option(
            c, False, f"misses the SLO even at batch 1 (TTFT {p1.ttft_s:.3f} s, TPOT {p1.tpot_s * 1e3:.1f} ms)"
        )
    replicas = max(1, math.ceil(target_rps * (1 + headroom) / best.rps))
    gpus = replicas * c.tp
    return Option(
        c,
        True,
        per_replica_rps=best.rps,
        batch=best.batch,
        ttft_s=best.ttft_s,
        tpot_s=best.tpot_s,
        replicas=replicas,
        gpus=gpus,
        usd_per_month=monthly_usd(gpus, prices.price(c.gpu)),
        settings=candidate_settings(c, replicas=replicas, batch=best.batch),
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
) -> list[Option]:
    """Every candidate, cheapest feasible first (ties: fewer GPUs, then more per-replica capacity)."""
    if target_rps <= 0 or headroom < 0:
        raise ValueError("target requests/s must be > 0 and headroom ≥ 0")
    opts = [
        evaluate(
            Candidate(model, g, tp, fp8, m),
            target_rps=target_rps,
            headroom=headroom,
            slo=slo,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            prices=prices,
            mtp_accept=mtp_accept,
        )
        for g in gpus
        for tp in tps
        for fp8 in precisions
        for m in mtp
    ]
    return sorted(opts, key=lambda o: (not o.feasible, o.usd_per_month, o.gpus, -o.per_replica_rps))


def plan_from_report(
    report: dict[str, Any], *, target_rps: float, headroom: float, candidate: Candidate, prices: PriceTable
) -> Option:
    """Replicas for the target from a measured report's SLO point (its throughput ÷ replicas run)."""
    point = report.get("slo_point")
    if not point:
        return Option(candidate, False, "the report has no load level that met the SLO")
    cost = report["points"][point["index"]].get("cost") or {}
    ran = int(cost.get("replicas") or 1)
    per_replica = point["throughput_rps"] / ran
    replicas = max(1, math.ceil(target_rps * (1 + headroom) / per_replica))
    gpus = replicas * candidate.tp
    return Option(
        candidate,
        True,
        per_replica_rps=per_replica,
        batch=int(point["load"]) if report["run"]["mode"] == "concurrency" else 0,
        replicas=replicas,
        gpus=gpus,
        usd_per_month=monthly_usd(gpus, prices.price(candidate.gpu)),
        settings=candidate_settings(candidate, replicas=replicas),
    )


def helm_values(opt: Option, chart_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """A values file for helm/qwen-serve: the chart's default ``settings`` with the plan's merged
    in, and one worker group for the chosen GPU type (lists replace, they do not merge, in Helm)."""
    from serving.config.hardware import GPU_PROFILES, GpuType

    settings: dict[str, Any] = _merge(dict((chart_defaults or {}).get("settings") or {}), opt.settings)
    groups = (chart_defaults or {}).get("workerGroups") or [{}]
    group = dict(groups[0]) | {
        "name": opt.candidate.gpu,
        "gpuProduct": GPU_PROFILES[GpuType(opt.candidate.gpu)].k8s_product_label,
    }
    return {"settings": settings, "workerGroups": [group]}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
