"""`loadtest run` against the simulator: records split reasoning from answer, the report carries
answer throughput and $/M answer tokens, and vision requests carry their screenshots.

Nothing here assumes how the simulator splits an output (today: half reasoning); only that
thinking requests reason before they answer and requests without thinking do not."""

import json
from pathlib import Path

import pytest

from tests.integration.loadtest.test_loadtest_simulator import PRESET, loadtest, start_simulator

pytestmark = pytest.mark.integration

TPOT = 0.005


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    proc, url = start_simulator(tmp_path_factory.mktemp("sim"), {"fixed_ttft_s": 0.05, "fixed_tpot_s": TPOT}, 64)
    yield url
    proc.terminate()
    proc.wait(10)


def run(url: str, scenario: Path, out: Path, levels: str = "1,4") -> dict:
    r = loadtest(
        "run", "--host", url, "--scenario", str(scenario), "--model", PRESET, "--levels", levels,
        "--duration", "3", "--warmup", "0.5", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads((out / "report.json").read_text())


def records(out: Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (out / "records.jsonl").read_text().splitlines()]
    return [r for r in rows if not r["warmup"] and r["ok"]]


def test_records_split_reasoning_from_answer_against_the_simulator(sim, tmp_path):
    sc = tmp_path / "think.yaml"
    sc.write_text(
        "name: think\nprompt_tokens: 20\noutput_tokens: 24\nthinking_ratio: 0.5\n"
        "reasoning_tokens: {dist: uniform, min: 30, max: 60}\n"
    )
    rep = run(sim, sc, tmp_path / "run")
    rows = records(tmp_path / "run")
    thinking = [r for r in rows if r["thinking"]]
    plain = [r for r in rows if not r["thinking"]]
    assert len(thinking) >= 5
    assert len(plain) >= 5
    for r in rows:
        assert r["reasoning_tokens"] + r["answer_tokens"] == r["completion_tokens"]
        assert r["reasoning_tokens_source"] in ("usage", "deltas", "chars")
    for r in thinking:
        assert 30 <= r["reasoning_tokens_hint"] <= 60
        assert r["reasoning_tokens"] >= r["reasoning_events"] >= 1
        assert r["answer_tokens"] >= 1
        assert r["ttfa_s"] > r["ttft_s"]  # the answer starts after the reasoning
    for r in plain:
        assert r["reasoning_tokens_hint"] is None
        assert r["reasoning_tokens"] == 0
        assert r["answer_tokens"] == r["completion_tokens"]
        assert r["ttfa_s"] == r["ttft_s"]
    # The wait for the first answer is the reasoning streamed at the simulator's fixed TPOT.
    gap = sum(r["ttfa_s"] - r["ttft_s"] for r in thinking) / len(thinking)
    reasoning = sum(r["reasoning_tokens"] - 1 for r in thinking) / len(thinking)
    assert gap >= 0.5 * reasoning * TPOT
    for p in rep["points"]:
        total = sum(r["answer_tokens"] for r in rows if r["load"] == p["load"])
        assert p["answer_tokens_per_s"] == pytest.approx(total / p["duration_s"])
        assert 0 < p["answer_tokens_per_s"] < p["output_tokens_per_s"]
        assert p["ttfa_s"]["p50"] > p["ttft_s"]["p50"]
        c = p["cost"]
        assert c["usd_per_million_answer"] > c["usd_per_million_output"]
    assert (tmp_path / "run" / "report.png").stat().st_size > 10_000


def test_vision_requests_record_images_and_their_expected_prompt_tokens(sim, tmp_path):
    sc = tmp_path / "vision.yaml"
    sc.write_text(
        "name: shots\nprompt_tokens: 10\noutput_tokens: 8\nthinking_ratio: 0\n"
        "images: {count: {dist: uniform, min: 1, max: 2}, sizes: [[640, 400], [100, 70]], variants: 2}\n"
    )
    rep = run(sim, sc, tmp_path / "vis", levels="2")
    rows = records(tmp_path / "vis")
    assert rows
    for r in rows:
        assert 1 <= r["images"] <= 2
        per_image = {20 * 13, 4 * 3}  # ceil(w/32) · ceil(h/32)
        assert r["image_tokens_expected"] in {a + b for a in per_image for b in per_image} | per_image
    assert rep["points"][0]["images"] == sum(r["images"] for r in rows)
