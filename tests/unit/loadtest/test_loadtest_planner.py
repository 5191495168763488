"""The planner picks the cheapest configuration meeting the SLO and writes values the chart accepts."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from loadtest.cost import load_prices
from loadtest.planner import Candidate, evaluate, helm_values, plan_from_model, plan_from_report, predict
from loadtest.stats import Slo
from serving.config import load_settings

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[3] / "helm" / "qwen-serve"
WORK = {"prompt_tokens": 2000.0, "output_tokens": 400.0}


def plan(prices, slo, **kw):
    return plan_from_model(model="qwen3.6-27b", target_rps=40.0, headroom=0.25, slo=slo, prices=prices, **WORK, **kw)


def test_price_decides_between_gpu_types():
    slo = Slo(ttft_s=1.0, tpot_s=0.05)
    h200_cheap = load_prices().with_overrides(["h100=10", "h200=1"])
    h100_cheap = load_prices().with_overrides(["h100=1", "h200=10"])
    only = {"gpus": ("h100", "h200"), "tps": (1, 2), "precisions": (True,), "mtp": (True,)}
    assert plan(h200_cheap, slo, **only)[0].candidate.gpu == "h200"
    assert plan(h100_cheap, slo, **only)[0].candidate.gpu == "h100"


def test_tight_tpot_leaves_only_speculative_decoding():
    # Without MTP a 27B decode step on one H100 reads ≥ 30 GB of FP8 weights: > 10 ms per token.
    slo = Slo(ttft_s=2.0, tpot_s=0.008)
    opts = plan(load_prices(), slo, gpus=("h100",), tps=(1,), precisions=(True,), mtp=(False, True))
    best = opts[0]
    assert best.feasible
    assert best.candidate.mtp
    assert all(not o.feasible for o in opts if not o.candidate.mtp)


def test_the_choice_is_the_cheapest_feasible_and_meets_the_slo_with_headroom():
    slo = Slo()
    prices = load_prices()
    opts = plan(prices, slo, gpus=("h100", "h200"), tps=(1, 2, 4))
    feasible = [o for o in opts if o.feasible]
    best = opts[0]
    assert best.usd_per_month == min(o.usd_per_month for o in feasible)
    assert best.ttft_s <= slo.ttft_s
    assert best.tpot_s <= slo.tpot_s
    assert best.replicas * best.per_replica_rps >= 40.0 * 1.25
    assert (best.replicas - 1) * best.per_replica_rps < 40.0 * 1.25  # not one replica too many
    # The prediction at the chosen batch is what the option reports.
    p = predict(best.candidate, batch=best.batch, mtp_accept=2.8, **WORK)
    assert p.rps == pytest.approx(best.per_replica_rps)


def test_candidates_the_settings_refuse_are_skipped_with_the_reason():
    o = evaluate(
        Candidate("qwen3.6-27b", "h100", 5, False, False),
        target_rps=1,
        headroom=0,
        slo=Slo(),
        prices=load_prices(),
        **WORK,
    )
    assert not o.feasible
    assert "tp" in o.reason.lower()


def test_plan_from_a_measured_report():
    report = {
        "run": {"mode": "concurrency"},
        "slo_point": {"index": 1, "load": 16, "throughput_rps": 6.0},
        "points": [{"cost": {}}, {"cost": {"replicas": 2}}],
    }
    o = plan_from_report(
        report,
        target_rps=30,
        headroom=0.2,
        candidate=Candidate("qwen3.6-27b", "h200", 2, False, True),
        prices=load_prices(),
    )
    assert o.per_replica_rps == pytest.approx(3.0)
    assert o.replicas == 12
    assert o.gpus == 24


def test_values_file_is_accepted_by_the_chart_schema():
    best = plan(load_prices(), Slo())[0]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = helm_values(best, defaults)
    merged = {**defaults, **values}  # Helm merges maps; our two keys replace the chart's
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(merged, schema)
    s = load_settings(overrides=values["settings"], env={})  # the settings tree accepts it too
    assert s.parallelism.tp == best.candidate.tp
    assert s.parallelism.gpu_type.value == best.candidate.gpu
    assert s.autoscaling.max_replicas == best.replicas
    assert values["workerGroups"][0]["gpuProduct"]


# --- per answer token ---------------------------------------------------------------------------

THINK = {"prompt_tokens": 2000.0, "output_tokens": 1400.0, "reasoning_tokens": 1000.0}  # 400-token answers
H100_MTP = Candidate("qwen3.6-27b", "h100", 1, True, True)


def test_first_answer_token_waits_for_the_reasoning():
    p = predict(H100_MTP, batch=4, mtp_accept=2.8, **THINK)
    assert p.ttfa_s == pytest.approx(p.ttft_s + 1000 * p.tpot_s)
    assert p.answer_tokens_per_s == pytest.approx(p.rps * 400)
    assert p.output_tokens_per_s == pytest.approx(p.rps * 1400)


def test_per_answer_token_holds_the_ttft_objective_for_the_first_answer_token():
    slo = Slo(ttft_s=6.0, tpot_s=0.05)
    kw = {"target_rps": 10, "headroom": 0.0, "slo": slo, "prices": load_prices(), **THINK}
    by_request = evaluate(H100_MTP, per="request", **kw)
    by_answer = evaluate(H100_MTP, per="answer-token", **kw)
    assert by_request.feasible
    assert by_answer.feasible
    assert by_request.ttfa_s > slo.ttft_s  # planning on the first token lets the first *answer* come late
    assert by_answer.ttfa_s <= slo.ttft_s
    assert by_answer.batch < by_request.batch
    assert by_answer.replicas >= by_request.replicas


def test_answer_token_capacity_and_price_leave_the_reasoning_out():
    slo = Slo(ttft_s=6.0, tpot_s=0.05)
    o = evaluate(H100_MTP, target_rps=10, headroom=0.0, slo=slo, prices=load_prices(), per="answer-token", **THINK)
    assert o.feasible
    assert o.per_replica_answer_tokens_per_s == pytest.approx(o.per_replica_rps * 400)
    answer_a_month = 10 * 400 * 730 * 3600
    assert o.usd_per_million_answer == pytest.approx(o.usd_per_month / answer_a_month * 1e6)


def level(load, rps, answer_tps, ttfa_p95, errors=0):
    return {
        "load": load, "requests": 10, "errors": errors, "throughput_rps": rps, "answer_tokens_per_s": answer_tps,
        "ttfa_s": {"p95": ttfa_p95}, "tpot_s": {"p95": 0.01}, "cost": {"replicas": 2},
    }  # fmt: skip


def test_plan_from_a_report_per_answer_token_uses_the_level_whose_first_answer_met_the_slo():
    report = {
        "run": {"mode": "concurrency"},
        "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 95.0},
        # The TTFT-based SLO point is concurrency 16, but its first answer tokens came after 3 s.
        "slo_point": {"index": 2, "load": 16, "throughput_rps": 8.0, "answer_tokens_per_s": 1600.0},
        "points": [level(1, 1.0, 200.0, 0.5), level(4, 4.0, 800.0, 0.9), level(16, 8.0, 1600.0, 3.0),
                   level(32, 9.0, 1800.0, 0.2, errors=1)],
    }  # fmt: skip
    kw = {"headroom": 0.0, "candidate": Candidate("qwen3.6-27b", "h200", 1, False, False), "prices": load_prices()}
    o = plan_from_report(report, target_rps=0, target_answer_tps=4000, per="answer-token", **kw)
    assert o.batch == 4
    assert o.per_replica_answer_tokens_per_s == pytest.approx(400.0)  # 800 answer tokens/s ÷ 2 replicas
    assert o.replicas == 10
    assert plan_from_report(report, target_rps=16, **kw).batch == 16  # per request: the report's SLO point
    strict = plan_from_report(report, target_rps=1, target_answer_tps=1, per="answer-token", slo=Slo(0.1), **kw)
    assert not strict.feasible
    assert "first answer" in strict.reason


def test_plan_cli_per_answer_token_writes_values_the_chart_accepts(tmp_path):
    from typer.testing import CliRunner

    from loadtest.cli import app

    out = tmp_path / "values.yaml"
    args = ["plan", "--answer-tps", "4000", "--scenario", "vision", "--per", "answer-token", "--gpus", "h100",
            "--tps", "1,2", "--precisions", "fp8", "--mtp", "on", "--values-out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "/M answer" in r.output
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values = yaml.safe_load(out.read_text())
    jsonschema.validate({**defaults, **values}, json.loads((CHART / "values.schema.json").read_text()))
    assert "answer-token" in out.read_text().splitlines()[0]
    bad = CliRunner().invoke(app, ["plan", "--rps", "1", "--per", "token"])
    assert bad.exit_code == 2
    assert "--per" in bad.output


def test_planner_batch_limit_is_the_launch_plans_admission_default():
    from loadtest.planner import Candidate, candidate_settings, max_batch
    from serving.config import load_settings, resolved_max_running

    c = Candidate("qwen3.6-27b", "h200", 1, False, True)
    s = load_settings(overrides=candidate_settings(c), env={})
    # short requests: the KV pool is no limit, so the planner runs what the launch plan admits
    assert max_batch(c, 1000, 500) == resolved_max_running(s)
    # long ones: the pool is (state slots would admit more than fit at once)
    assert max_batch(c, 100_000, 20_000) < resolved_max_running(s)
