"""The inter-token histogram takes a whole stream's gaps at once and exposes exactly what
``prometheus_client.Histogram`` would after observing them one by one."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving.observability.metrics import ITL_BUCKETS_S, BatchHistogram

pytestmark = pytest.mark.unit

GAPS = [0.00005, 0.0001, 0.001, 0.0011, 0.003, 0.25, 2.5, 7.0]  # bounds themselves land in their own bucket


def _series(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if line.startswith("itl_seconds") and "_created" not in line}


def test_batched_gaps_expose_the_same_series_as_one_observe_per_gap() -> None:
    ours, ref = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("itl_seconds", "gaps", "model", ITL_BUCKETS_S, ours)
    hist = Histogram("itl_seconds", "gaps", ["model"], buckets=ITL_BUCKETS_S, registry=ref)
    batch.add("m1", GAPS[:3])
    batch.add("m1", GAPS[3:])
    batch.add("m2", [0.02])
    for g in GAPS:
        hist.labels("m1").observe(g)
    hist.labels("m2").observe(0.02)
    assert _series(ours) == _series(ref)
    assert 'itl_seconds_bucket{le="0.0001",model="m1"} 2.0' in _series(ours)
