"""Gateway metrics on a per-app ``CollectorRegistry`` (never the process-global one), so several
apps in one process (tests, a gateway next to a replica) do not collide.

Semantics (the dashboard and the alerts rely on them):

- Units are in the names; counters end in ``_total`` on the wire.
- ``qwen_serve_time_to_first_token_seconds``: streams only, request received → the first chunk
  that carries a token (content, reasoning or a tool call), not a role-only or empty chunk.
- ``qwen_serve_time_to_first_answer_token_seconds``: streams only, request received → the first
  *content* token, i.e. after the reasoning (what a user of a thinking model waits for).
- ``qwen_serve_non_streaming_request_duration_seconds``: non-streaming requests, received → answered.
- ``qwen_serve_reasoning_tokens_total`` / ``qwen_serve_answer_tokens_total``: completion tokens
  split by thinking vs answer (the engine's ``reasoning_tokens`` when it reports one, otherwise
  counted by the gateway); ``qwen_serve_reasoning_share_ratio``: that split per request.
- ``qwen_serve_images_total`` / ``qwen_serve_image_prompt_tokens_total``: image parts, and the
  prompt tokens of data-URL images (patch 16 × merge 2: one per 32 × 32 pixels).
- ``qwen_serve_e2e_request_latency_seconds``: every request, received → last byte, by outcome.
- ``qwen_serve_admission_rejections_total``: requests the gateway refused before sending them to an
  engine, by reason (the error code: ``rate_limit_exceeded``, ``overloaded``, ``no_engine``, …).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Time to first token / whole requests: 5 ms (a cached short prompt) to 10 minutes (a long
# reasoning answer, non-streaming, at 262k context).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Gaps between streamed chunks: sub-millisecond (MTP bursts, batched reads) to a few seconds (a
# stall behind a long prefill).
ITL_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25,
                 0.5, 1, 2.5)  # fmt: skip


SHARE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# The gateway's refusal codes, exported at 0 from the start so a first rejection shows as a rate.
ADMISSION_REASONS = (
    "rate_limit_exceeded", "overloaded", "no_engine", "registry_unavailable", "queue_full", "queue_timeout",
)  # fmt: skip


class BatchHistogram(Collector):
    """A histogram with one label (the model) that takes a request's observations in one call.

    The inter-token gaps of a stream arrive one per SSE event; observing each in a
    ``prometheus_client.Histogram`` costs two locked increments and a bucket scan per event.
    Here the stream's gaps are added once, when it ends: a bisect each, into plain counts that
    ``collect`` exposes as the usual ``_bucket`` / ``_sum`` / ``_count`` series. Single event
    loop: no lock (``add`` and ``collect`` never await)."""

    def __init__(self, name: str, doc: str, label: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        registry.register(self)

    def add(self, value: str, observations: Iterable[float]) -> None:
        counts, total = self.series.get(value) or self.series.setdefault(value, ([0] * (len(self.bounds) + 1), [0.0]))
        bounds = self.bounds
        s = total[0]
        for x in observations:
            counts[bisect_left(bounds, x)] += 1  # le-buckets: the first bound ≥ x
            s += x  # in order, as one observe() each would add them
        total[0] = s

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for value, (counts, total) in self.series.items():
            cum, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                cum += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cum)))
            fam.add_metric([value], buckets, total[0])
        yield fam


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, prefix: str = "qwen_serve") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{prefix}_requests", "Finished requests by model, route and HTTP status",
            ["model", "route", "status"], registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            f"{prefix}_time_to_first_token_seconds",
            "Streams: request received → first chunk carrying a content, reasoning or tool-call token",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.ttfa = Histogram(
            f"{prefix}_time_to_first_answer_token_seconds",
            "Streams: request received → first content token (after any reasoning)",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.itl = BatchHistogram(
            f"{prefix}_inter_token_latency_seconds", "Gap between consecutive streamed chunks",
            "model", ITL_BUCKETS_S, r,
        )  # fmt: skip
        self.e2e = Histogram(
            f"{prefix}_e2e_request_latency_seconds", "Request received → last byte sent, by outcome",
            ["model", "outcome"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.non_streaming = Histogram(
            f"{prefix}_non_streaming_request_duration_seconds",
            "Non-streaming requests: received → whole answer sent, by outcome",
            ["model", "outcome"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(f"{prefix}_prompt_tokens", "Prompt tokens (engine usage)", ["model"], registry=r)
        self.completion_tokens = Counter(
            f"{prefix}_completion_tokens", "Completion tokens (engine usage)", ["model"], registry=r
        )
        self.reasoning_tokens = Counter(
            f"{prefix}_reasoning_tokens", "Completion tokens spent thinking (engine count, else counted here)",
            ["model"], registry=r,
        )  # fmt: skip
        self.answer_tokens = Counter(
            f"{prefix}_answer_tokens", "Completion tokens of the answer itself (completion − reasoning)",
            ["model"], registry=r,
        )  # fmt: skip
        self.reasoning_share = Histogram(
            f"{prefix}_reasoning_share_ratio", "Per request: reasoning tokens ÷ completion tokens",
            ["model"], buckets=SHARE_BUCKETS, registry=r,
        )  # fmt: skip
        self.images = Counter(f"{prefix}_images", "image_url parts in requests", ["model"], registry=r)
        self.image_prompt_tokens = Counter(
            f"{prefix}_image_prompt_tokens", "Prompt tokens of data-URL images (one per 32 × 32 pixels)",
            ["model"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(f"{prefix}_requests_in_flight", "Requests being served now", registry=r)
        self.upstream_retries = Counter(
            f"{prefix}_upstream_retries", "Requests retried on another engine before the first byte", registry=r
        )
        self.routed = Counter(
            f"{prefix}_routed_requests", "Requests sent to each engine endpoint", ["endpoint", "policy"], registry=r
        )
        self.queue_wait = Histogram(
            f"{prefix}_queue_wait_seconds", "Time a request waited in the gateway before dispatch, by reason",
            ["model", "reason"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.queued = Gauge(f"{prefix}_requests_queued", "Requests waiting in the gateway", ["reason"], registry=r)
        self.client_disconnects = Counter(
            f"{prefix}_client_disconnects", "Streams the client closed before the end", ["model"], registry=r
        )
        self.rejections = Counter(
            f"{prefix}_admission_rejections", "Requests refused before reaching an engine, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in ADMISSION_REASONS:
            self.rejections.labels(reason)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set instead of once per request
        (``labels`` validates and locks). The sets are small (models × routes × statuses, engine
        endpoints × policy); endpoints come and go, so the cache starts over past 4096 entries."""
        key = (metric, labels)
        c = self._children.get(key)
        if c is None:
            if len(self._children) >= 4096:
                self._children.clear()
            c = self._children[key] = metric.labels(*labels)
        return c

    def render(self) -> bytes:
        return generate_latest(self.registry)
