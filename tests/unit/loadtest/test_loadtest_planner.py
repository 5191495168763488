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


# --- $/M tokens at the SLO point ----------------------------------------------------------------

H200_TP1 = Candidate("qwen3.6-27b", "h200", 1, True, False)


def test_tokens_are_priced_at_the_slo_point_by_modelled_prefill_time():
    prices = load_prices()
    o = evaluate(H200_TP1, target_rps=5, headroom=0.2, slo=Slo(), prices=prices, **WORK)
    assert o.feasible
    p = predict(H200_TP1, batch=o.batch, mtp_accept=2.8, **WORK)
    # The input share is the modelled GPU time prefills take at the SLO point: ρ = λ × prefill(I).
    from serving.capacity.pipeline import PipelineTiming
    from serving.capacity.timing import Deployment

    busy = PipelineTiming(Deployment.of(H200_TP1.preset, gpu="h200", tp=1)).prefill_busy_s(2000)
    assert o.prefill_share == pytest.approx(p.rps * busy, rel=1e-6)
    assert 0 < o.prefill_share < 1
    # One replica at its capacity pays for itself: input tokens × $/M in + output × $/M out.
    usd_per_s = H200_TP1.gpus * prices.price("h200") / 3600
    paid = o.per_replica_rps * (2000 * o.usd_per_million_input + 400 * o.usd_per_million_output) / 1e6
    assert paid == pytest.approx(usd_per_s)
    assert o.usd_per_million_output_all == pytest.approx(usd_per_s / (o.per_replica_rps * 400) * 1e6)
    assert o.utilisation == pytest.approx(5 / (o.replicas * o.per_replica_rps))


def test_longer_prompts_move_the_bill_towards_input_tokens():
    kw = {"target_rps": 2, "headroom": 0.0, "slo": Slo(ttft_s=5.0), "prices": load_prices(), "output_tokens": 400.0}
    short = evaluate(H200_TP1, prompt_tokens=500.0, **kw)
    long = evaluate(H200_TP1, prompt_tokens=16000.0, **kw)
    assert short.prefill_share < long.prefill_share
    assert short.usd_per_million_output < long.usd_per_million_output_all


# --- candidates: engines and TP × PP layouts ----------------------------------------------------


def test_the_candidate_set_spans_engines_and_pipeline_layouts():
    opts = plan(load_prices(), Slo(), gpus=("h100",), tps=(4, 8), pps=(1, 2), engines=("sglang", "vllm"))
    seen = {(o.candidate.engine, o.candidate.tp, o.candidate.pp) for o in opts}
    assert seen == {(e, tp, pp) for e in ("sglang", "vllm") for tp in (4, 8) for pp in (1, 2)}
    # pp > 1 with MTP is not a candidate: the settings' own rule refuses it, named by its field
    pp_mtp = [o for o in opts if o.candidate.pp > 1 and o.candidate.mtp]
    assert pp_mtp
    assert all(not o.feasible and o.reason.startswith("speculative.enabled") for o in pp_mtp)
    # tp8 × pp2 needs 16 GPUs: two 8-GPU nodes, and the settings it writes say so
    two_nodes = next(o for o in opts if o.feasible and (o.candidate.tp, o.candidate.pp) == (8, 2))
    assert two_nodes.candidate.nodes == 2
    s = load_settings(overrides=two_nodes.settings, env={})
    assert (s.parallelism.tp, s.parallelism.pp, s.parallelism.nodes) == (8, 2, 2)
    assert two_nodes.gpus == two_nodes.replicas * 16
    assert two_nodes.bubble > 0
    assert any("pp2" in n for n in two_nodes.notes)


def test_layouts_the_validation_refuses_are_not_candidates():
    o = evaluate(Candidate("qwen3.6-27b", "h100", 3, False, False, "sglang", 3), target_rps=1, headroom=0,
                 slo=Slo(), prices=load_prices(), **WORK)  # fmt: skip
    assert not o.feasible  # 9 ranks over 2 nodes: the settings' ranks_fill_nodes rule
    assert o.reason.startswith("parallelism.nodes: tp × pp = 9 is not a multiple of nodes = 2")


def test_a_tp_group_across_nodes_is_not_a_candidate():
    o = evaluate(Candidate("qwen3.6-27b", "h100", 12, False, False), target_rps=1, headroom=0, slo=Slo(),
                 prices=load_prices(), **WORK)  # fmt: skip
    assert not o.feasible
    assert "TP group across nodes" in o.reason


def test_pipeline_stages_make_room_for_prompts_one_gpu_cannot_hold():
    long = {"prompt_tokens": 180_000.0, "output_tokens": 400.0}
    kw = {"target_rps": 0.1, "headroom": 0.0, "slo": Slo(ttft_s=60.0, tpot_s=0.1), "prices": load_prices(), **long}
    one = evaluate(Candidate("qwen3.6-27b", "h100", 1, False, False), **kw)
    two = evaluate(Candidate("qwen3.6-27b", "h100", 1, False, False, "sglang", 2), **kw)
    assert not one.feasible
    assert "fits in memory" in one.reason
    assert two.feasible


def test_a_pipeline_does_not_speed_up_a_token_like_tensor_parallel():
    tp2 = predict(Candidate("qwen3.6-27b", "h100", 2, False, False), batch=32, mtp_accept=2.8, **WORK)
    pp2 = predict(Candidate("qwen3.6-27b", "h100", 1, False, False, "sglang", 2), batch=32, mtp_accept=2.8, **WORK)
    # each stage reads its weights once per microbatch (prefills take less of each stage, so not 2×)
    assert pp2.tpot_s > 1.25 * tp2.tpot_s
    assert pp2.bubble < 0.05 < predict(Candidate("qwen3.6-27b", "h100", 1, False, False, "sglang", 2), batch=1,
                                       mtp_accept=2.8, **WORK).bubble  # fmt: skip


def test_vllm_candidates_follow_the_projects_vllm_plan_and_tie_with_sglang():
    from serving.config import resolved_max_running
    from serving.engines import plan_instance

    kw = {"target_rps": 10, "headroom": 0.2, "slo": Slo(), "prices": load_prices(), **WORK}
    for mtp in (False, True):
        sg = Candidate("qwen3.6-27b", "h200", 2, True, mtp)
        vl = Candidate("qwen3.6-27b", "h200", 2, True, mtp, "vllm")
        a, b = evaluate(sg, **kw), evaluate(vl, **kw)
        assert (a.batch, a.per_replica_rps, a.usd_per_month) == (b.batch, b.per_replica_rps, b.usd_per_month)
        s = load_settings(overrides=b.settings, env={})
        argv = plan_instance(s, host="127.0.0.1", port=8000).ranks[0].argv
        # its admission is the plan's --max-num-seqs, MTP only when the candidate enables it
        assert argv[argv.index("--max-num-seqs") + 1] == str(resolved_max_running(s))
        assert ("--speculative-config" in argv) == mtp
        assert b.batch <= resolved_max_running(s)
        assert any(n.startswith("vllm:") for n in b.notes)
    ranked = plan(load_prices(), Slo(), gpus=("h200",), tps=(2,), precisions=(True,), mtp=(True,),
                  engines=("vllm", "sglang"))  # fmt: skip
    assert [o.candidate.engine for o in ranked] == ["sglang", "vllm"]  # the tie goes to the calibrated engine


def test_values_select_the_engine_and_layout_and_pass_the_chart_schema():
    from loadtest.planner import engine_image

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    kw = {"target_rps": 10, "headroom": 0.2, "slo": Slo(), "prices": load_prices(), **WORK}
    vllm_profile = yaml.safe_load((CHART / "values-vllm-h100.yaml").read_text())
    for c in (Candidate("qwen3.6-27b", "h100", 8, False, False, "sglang", 2),
              Candidate("qwen3.6-27b", "h100", 4, True, True, "vllm")):  # fmt: skip
        o = evaluate(c, **kw)
        assert o.feasible, o.reason
        values = helm_values(o, defaults, engine_image(CHART, c.engine))
        jsonschema.validate({**defaults, **values}, schema)
        s = load_settings(overrides=values["settings"], env={})
        assert s.engine.kind.value == c.engine
        assert (s.parallelism.tp, s.parallelism.pp, s.parallelism.nodes) == (c.tp, c.pp, c.nodes)
        assert s.speculative.enabled == c.mtp
        assert s.autoscaling.max_replicas == o.replicas
        # the vLLM image is the chart's vLLM profile's; SGLang keeps the chart's default image
        image = values.get("image", defaults["image"])
        assert image == (defaults["image"] | vllm_profile["image"] if c.engine == "vllm" else defaults["image"])


def test_plan_cli_prints_token_prices_in_text_markdown_and_json(tmp_path):
    from typer.testing import CliRunner

    from loadtest.cli import app

    base = ["plan", "--rps", "10", "--gpus", "h200", "--tps", "1,2", "--pps", "1,2", "--precisions", "fp8"]
    text = CliRunner().invoke(app, base)
    assert text.exit_code == 0, text.output
    head = text.output.splitlines()[0].split()
    assert {"$/M", "in", "out", "all", "util", "bubble", "engine", "layout"} <= set(head)
    assert "sglang, vllm" in text.output  # equal rows folded: vLLM's times are SGLang's model
    assert "refused" in text.output
    assert "speculative.enabled" in text.output
    md = CliRunner().invoke(app, [*base, "--format", "markdown"])
    assert md.exit_code == 0, md.output
    assert md.output.startswith("| engine | gpu | layout |")
    assert "| $/M in | $/M out | $/M out all |" in md.output
    js = CliRunner().invoke(app, [*base, "--format", "json"])
    rows = json.loads(js.output)
    feasible = [r for r in rows if r["feasible"]]
    assert feasible
    assert all(r["usd_per_million_input"] > 0 and r["usd_per_million_output"] > 0 for r in feasible)
    assert {r["candidate"]["engine"] for r in rows} == {"sglang", "vllm"}
    assert {r["candidate"]["pp"] for r in rows} == {1, 2}
    for bad, name in ((["--format", "yaml"], "--format"), (["--engines", "trt"], "--engines"),
                      (["--pps", "0"], "--pps")):  # fmt: skip
        r = CliRunner().invoke(app, [*base, *bad])
        assert r.exit_code == 2
        assert name in r.output


def test_plan_from_a_report_prices_tokens_at_its_measured_slo_point():
    point = {"prompt_tokens": 4_000_000, "completion_tokens": 1_000_000, "duration_s": 1800.0,
             "cost": {"replicas": 2, "gpu_hours": 1.0, "input_weight": 0.25}}  # fmt: skip
    report = {"run": {"mode": "concurrency"}, "slo_point": {"index": 0, "load": 16, "throughput_rps": 6.0},
              "points": [point]}  # fmt: skip
    prices = load_prices().with_overrides(["h200=4"])
    c = Candidate("qwen3.6-27b", "h200", 2, False, False, "vllm")
    o = plan_from_report(report, target_rps=9, headroom=0.0, candidate=c, prices=prices)
    # 1 GPU-hour at $4 over 1 M output + 0.25 × 4 M input equivalents: $2/M out, $0.5/M in, $4/M all on output
    assert (o.usd_per_million_output, o.usd_per_million_input) == (pytest.approx(2.0), pytest.approx(0.5))
    assert o.usd_per_million_output_all == pytest.approx(4.0)
    assert o.prefill_share == pytest.approx(0.5)
    assert o.basis == "report"
    assert o.utilisation == pytest.approx(9 / (o.replicas * 3.0))
    assert load_settings(overrides=o.settings, env={}).engine.kind.value == "vllm"
    # no GPU-hours measured: the level's duration × the replicas × GPUs that ran (2 × 2) → $8/M all
    point["cost"] = {"replicas": 2}
    assert plan_from_report(report, target_rps=9, headroom=0.0, candidate=c, prices=prices).usd_per_million_output_all \
        == pytest.approx(8.0)  # fmt: skip


def test_plan_cli_from_a_report_writes_the_engine_layout_and_precision_that_ran(tmp_path):
    from typer.testing import CliRunner

    from loadtest.cli import app

    report = Path(__file__).resolve().parents[3] / "loadtest" / "examples" / "agent_thinking" / "report.json"
    out = tmp_path / "values.yaml"
    args = ["plan", "--rps", "5", "--from-report", str(report), "--model", "qwen3.6-35b-a3b", "--gpu", "h200",
            "--precisions", "fp8", "--mtp", "on", "--engine", "vllm", "--values-out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    s = load_settings(overrides=yaml.safe_load(out.read_text())["settings"], env={})
    assert (s.model.preset, s.engine.kind.value, s.speculative.enabled) == ("qwen3.6-35b-a3b-fp8", "vllm", True)
    assert "$/M in" in r.output
