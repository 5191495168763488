"""Gateway metrics on a per-app ``CollectorRegistry`` (never the process-global one), so several
apps in one process (tests, a gateway next to a replica) do not collide. Units are in the names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


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
            f"{prefix}_time_to_first_token_seconds", "Request received → first token byte sent (streams)",
            ["model"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            f"{prefix}_inter_token_latency_seconds", "Gap between consecutive streamed chunks",
            ["model"], buckets=_ITL_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            f"{prefix}_e2e_request_latency_seconds", "Request received → last byte sent, by outcome",
            ["model", "outcome"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(f"{prefix}_prompt_tokens", "Prompt tokens (engine usage)", ["model"], registry=r)
        self.completion_tokens = Counter(
            f"{prefix}_completion_tokens", "Completion tokens (engine usage)", ["model"], registry=r
        )
        self.in_flight = Gauge(f"{prefix}_requests_in_flight", "Requests being served now", registry=r)
        self.upstream_retries = Counter(
            f"{prefix}_upstream_retries", "Requests retried on another engine before the first byte", registry=r
        )
        self.routed = Counter(
            f"{prefix}_routed_requests", "Requests sent to each engine endpoint", ["endpoint", "policy"], registry=r
        )
        self.queue_wait = Histogram(
            f"{prefix}_queue_wait_seconds", "Time a request waited in the gateway before dispatch, by reason",
            ["model", "reason"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.queued = Gauge(f"{prefix}_requests_queued", "Requests waiting in the gateway", ["reason"], registry=r)
        self.client_disconnects = Counter(
            f"{prefix}_client_disconnects", "Streams the client closed before the end", ["model"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
