"""The replica's load read (``prom_values``) hands only the wanted samples' lines to Prometheus's
parser; every sample it reports must equal what a parse of the whole exposition gives."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.engines import get_engine
from serving.engines.base import prom_values
from serving.engines.simulator.metrics import SimMetrics

pytestmark = pytest.mark.unit


def _exposition() -> str:
    m = SimMetrics("qwen3.6-27b", lambda: {"num_running_reqs": 5.0, "num_queue_reqs": 2.0})
    for s in (0.01, 0.2, 3.0):
        m.ttft.observe(s)
        m.e2e.observe(s * 10)
    return m.exposition().decode() + 'other{model_name="a b{c} 1"} 7\nnum_running_reqs 9\n'


def _full_parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def test_each_wanted_sample_sums_as_a_full_parse_of_the_exposition_does():
    text = _exposition()
    full = _full_parse(text)
    wanted = sorted(full)  # every sample name: gauges, counters' _total, histograms' _bucket/_sum/_count
    assert prom_values(text, wanted) == {name: full[name] for name in wanted}
    assert "sglang:time_to_first_token_seconds_bucket" in wanted
    assert full["sglang:e2e_request_latency_seconds_count"] == 3


def test_a_name_that_prefixes_another_is_not_credited_with_its_samples():
    text = _exposition()
    got = prom_values(text, ["sglang:time_to_first_token_seconds", "sglang:num_running_reqs", "absent"])
    assert got == {"sglang:time_to_first_token_seconds": 0.0, "sglang:num_running_reqs": 5.0, "absent": 0.0}


def test_the_sglang_load_is_its_running_and_queued_gauges():
    load = get_engine("sglang").parse_load(_exposition())
    assert (load.running, load.queued) == (5.0, 2.0)
