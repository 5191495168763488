"""The timing model replays every published cell: the fit set within ±15 %, the held-out set (never
used to choose a constant) within ±20 %, or fails strictly where it honestly misses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.engines.simulator.report import (
    FIT,
    HELD_OUT,
    PUBLISHED,
    TOLERANCES,
    Cell,
    app,
    cookbook_deployment,
    fit_calibration,
    parse_cells,
    predictions,
    replay,
    summaries,
)

pytestmark = pytest.mark.unit

KNOWN_MISSES = {
    "h200 qwen3.6-27b c=16 ttft_s": "the replay's closed loop settles into staggered arrivals: most requests "
    "meet no other prefill, so the median TTFT is the bare prefill + the overlap lag (0.79 s vs 1.2 s); "
    "the published median implies about half wait behind another request's prefill",
    "h200 qwen3.6-27b-fp8 c=1 4096/1024 no-mtp output_tok_s": "plain FP8 decode at batch 1 predicted 16 % "
    "fast while the same PR's MTP cell is 13 % slow: the fitted FP8 weight share splits the difference",
    # held out (reported, never fitted):
    "h200 qwen3.6-27b-fp8 c=16 ttft_s": "the same staggered-arrival median as the fit set's H200 c=16 TTFT",
    "h200 qwen3.6-35b-a3b-fp8 c=16 ttft_s": "the same staggered-arrival median, on a MoE FP8 prefill no fit "
    "cell covers (0.13 s vs 0.19 s)",
}

ROWS = {r.cell: r for r in predictions()}


def _param(c: Cell) -> object:
    reason = KNOWN_MISSES.get(c.label)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(c.label, id=c.label.replace(" ", "-"), marks=marks)


@pytest.mark.parametrize("label", [_param(c) for c in PUBLISHED if c.set == FIT])
def test_prediction_within_tolerance(label: str) -> None:
    row = ROWS[label]
    assert abs(row.ratio - 1) <= TOLERANCES[FIT], f"{label}: predicted {row.predicted:.4g} vs {row.published:.4g}"


@pytest.mark.parametrize("label", [_param(c) for c in PUBLISHED if c.set == HELD_OUT])
def test_held_out_prediction_within_tolerance(label: str) -> None:
    row = ROWS[label]
    assert abs(row.ratio - 1) <= TOLERANCES[HELD_OUT], f"{label}: predicted {row.predicted:.4g} vs {row.published:.4g}"


def test_h100_is_memory_starved_queueing() -> None:
    from serving.config.hardware import GpuType

    run = replay(cookbook_deployment(GpuType.H100, "qwen3.6-27b"), 16)
    assert run.max_running < 16
    assert run.ttft_s > 20 * replay(cookbook_deployment(GpuType.H200, "qwen3.6-27b"), 16).ttft_s


def test_each_set_is_summarised_on_its_own_cells() -> None:
    rows = predictions()
    sums = {s.set: s for s in summaries(rows)}
    assert set(sums) == {FIT, HELD_OUT}
    assert sums[FIT].cells == sum(c.set == FIT for c in PUBLISHED)
    assert sums[HELD_OUT].cells == sum(c.set == HELD_OUT for c in PUBLISHED)
    assert sums[HELD_OUT].tolerance == 0.20
    assert sums[FIT].within == sum(r.within for r in rows if r.set == FIT)


def test_fitting_refuses_held_out_cells() -> None:
    held = [c for c in PUBLISHED if c.set == HELD_OUT][:1]
    with pytest.raises(ValueError, match="held-out"):
        fit_calibration(held)


def test_h100_default_memory_fraction_leaves_room_for_two_running() -> None:
    # SGLang's own mem-fraction heuristic for a multimodal model on 80 GB, the MTP layer and the VLM
    # cache come off the budget: the published H100 cell's queueing (67 s TTFT) matches ~2 running
    from serving.capacity import sglang_memory_defaults
    from serving.config import get_preset
    from serving.config.hardware import GpuType

    mem = sglang_memory_defaults(get_preset("qwen3.6-27b"), GpuType.H100)
    assert mem.chunked_prefill_size == 8192
    assert 0.7 < mem.mem_fraction < 0.8
    assert replay(cookbook_deployment(GpuType.H100, "qwen3.6-27b"), 16).max_running == 2


def test_held_out_cells_are_the_cookbook_cells_not_in_the_fit_set() -> None:
    fit = {c.label for c in PUBLISHED if c.set == FIT}  # the label names lengths, TP and MTP too
    held = [c.label for c in PUBLISHED if c.set == HELD_OUT]
    assert held
    assert not fit & set(held)


def test_report_evaluates_a_cell_file(tmp_path: Path) -> None:
    f = tmp_path / "cells.yaml"
    f.write_text(
        "cells:\n"
        "  - {gpu: h200, preset: qwen3.6-27b, concurrency: 1, metric: tpot_s, published: 0.0056, set: fit}\n"
        "  - {gpu: h200, preset: qwen3.6-27b-fp8, concurrency: 8, metric: output_tok_s, published: 900,\n"
        "     input_tokens: 4096, output_tokens: 1024, mtp: false}\n"
    )
    res = CliRunner().invoke(app, ["--json", "--cells", str(f)])  # the one command of `serving simulator`
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [r["set"] for r in doc["rows"]] == [FIT, HELD_OUT]  # a file's cells are held out unless marked
    assert doc["rows"][1]["cell"] == "h200 qwen3.6-27b-fp8 c=8 4096/1024 no-mtp output_tok_s"
    assert {s["set"] for s in doc["sets"]} == {FIT, HELD_OUT}


def test_cell_file_errors_name_the_cell_and_field() -> None:
    with pytest.raises(ValueError, match=r"cells\[0\]\.metric"):
        parse_cells([{"gpu": "h200", "preset": "qwen3.6-27b", "concurrency": 1, "metric": "x", "published": 1}])
    with pytest.raises(ValueError, match=r"missing published"):
        parse_cells({"cells": [{"gpu": "h200", "preset": "qwen3.6-27b", "concurrency": 1, "metric": "ttft_s"}]})
