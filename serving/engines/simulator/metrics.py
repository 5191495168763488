"""The simulator's metrics: counts kept once (:class:`Counts`), read by ``/sim/stats`` and exported
under SGLang's names at scrape time; latency histograms; gauges computed from the live state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 20, 40, 80, 160)
BUCKETS_ITL = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1)
BUCKETS_E2E = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)


@dataclass
class Counts:
    started: int = 0
    finished: int = 0
    aborted: int = 0
    disconnected: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    streamed_tokens: int = 0
    cached_tokens: int = 0


# SGLang counter name → (help, the Counts field it reads)
COUNTERS = {
    "sglang:prompt_tokens": ("prompt tokens", "prompt_tokens"),
    "sglang:generation_tokens": ("generated tokens", "generation_tokens"),
    "sglang:num_aborted_requests": ("aborted requests", "aborted"),
    "sglang:num_requests": ("finished requests", "finished"),
}

RETRACTED_DOC = "requests retracted (KV pool exhausted), re-queued and recomputed"

GAUGES = {
    "num_running_reqs": "running requests",
    "num_queue_reqs": "requests waiting in the queue",
    "token_usage": "share of the KV token pool in use",
    "mamba_usage": "share of recurrent-state slots in use",
    "gen_throughput": "generation throughput (tokens/s), last interval",
    "cache_hit_rate": "prefix-cache hit rate (tokens)",
    "spec_accept_length": "mean accepted tokens per verify step",
    "spec_accept_rate": "accepted / drafted tokens",
}


class _Live(Collector):
    """Counters from :class:`Counts` and gauges from ``gauges()``, both read when scraped."""

    def __init__(self, m: SimMetrics, gauges: Callable[[], dict[str, float]]) -> None:
        self.m, self.gauges = m, gauges

    def _counter_values(self) -> dict[str, float]:
        values = {name: float(getattr(self.m.counts, field)) for name, (_, field) in COUNTERS.items()}
        values["sglang:num_retracted_requests"] = float(self.m.retracted())
        return values

    def describe(self) -> Iterator[Metric]:
        """Names only (the registry asks at registration, before the server's state exists)."""
        for name, (doc, _) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, labels=["model_name"])
        yield CounterMetricFamily("sglang:num_retracted_requests", RETRACTED_DOC, labels=["model_name"])
        for name, doc in GAUGES.items():
            yield GaugeMetricFamily(f"sglang:{name}", doc, labels=["model_name"])

    def collect(self) -> Iterator[Metric]:
        label = [self.m.model_name]
        for name, value in self._counter_values().items():
            doc = COUNTERS[name][0] if name in COUNTERS else RETRACTED_DOC
            c = CounterMetricFamily(name, doc, labels=["model_name"])
            c.add_metric(label, value)
            yield c
        values = self.gauges()
        for name, doc in GAUGES.items():
            g = GaugeMetricFamily(f"sglang:{name}", doc, labels=["model_name"])
            g.add_metric(label, values.get(name, 0.0))
            yield g


class SimMetrics:
    def __init__(
        self, model_name: str, gauges: Callable[[], dict[str, float]], retracted: Callable[[], int] = lambda: 0
    ) -> None:
        self.model_name = model_name
        self.retracted = retracted
        self.counts = Counts()
        r = self.registry = CollectorRegistry(auto_describe=True)
        lab, val = ["model_name"], {"model_name": model_name}

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, lab, buckets=buckets, registry=r).labels(**val)  # type: ignore[no-any-return]

        self.ttft = hist("sglang:time_to_first_token_seconds", "TTFT", BUCKETS_TTFT)
        self.itl = hist("sglang:inter_token_latency_seconds", "ITL", BUCKETS_ITL)
        self.e2e = hist("sglang:e2e_request_latency_seconds", "E2E", BUCKETS_E2E)
        self.queue = hist("sglang:queue_time_seconds", "queue time", BUCKETS_TTFT)
        r.register(_Live(self, gauges))
        self._tp_last = (time.monotonic(), 0)
        self.gen_throughput = 0.0

    def throughput(self) -> float:
        """Generated tokens/s since the previous reading at least 0.5 s ago (SGLang's last interval)."""
        now, toks = time.monotonic(), self.counts.generation_tokens
        t0, k0 = self._tp_last
        if now - t0 > 0.5:
            self.gen_throughput = (toks - k0) / (now - t0)
            self._tp_last = (now, toks)
        return self.gen_throughput

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
