"""The request ledger: the one place that counts a generation request in and out.

``Ledger.open`` starts a request's :class:`Entry` (the in-flight count, its span); ``Entry.finish``
records it exactly once: the in-flight count, request/latency/token metrics, the rate limiter's
settlement against the engine's usage, the span's end and the access line. Requests refused before
an entry exists are recorded by ``Ledger.refused``. The in-flight gauge reads the ledger's count,
so there is one count, not two.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer

from serving.gateway.auth import RateLimiter, Tenant
from serving.gateway.errors import ApiError
from serving.gateway.relay import StreamStats, Usage, reasoning_tokens
from serving.gateway.shared_limits import SharedRateLimiter
from serving.gateway.vision import NONE as NO_IMAGES
from serving.observability.metrics import GatewayMetrics
from serving.registry import Endpoint

access_log = logging.getLogger("serving.gateway.access")


class Ledger:
    def __init__(self, metrics: GatewayMetrics, limiter: RateLimiter, tracer: Tracer, *, roots: bool = True) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self.tracer = tracer
        self.roots = roots  # a request without a caller's trace gets a span (False: spans go nowhere)
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def admit(self, tenant: Tenant, estimate: int) -> None:
        """The tenant's rate limits: take one request and the token estimate, or raise 429."""
        if isinstance(self.limiter, SharedRateLimiter) and self.limiter.enabled_for(tenant):
            await self.limiter.admit_shared(tenant.id, estimate, tenant.requests_per_min, tenant.tokens_per_min)
        else:
            self.limiter.admit(tenant.id, estimate, tenant.requests_per_min, tenant.tokens_per_min)

    def open(
        self, route: str, model: str, who: str, estimate: int, t0: float, *,
        parent: Context | None, attributes: dict[str, Any],
    ) -> Entry:  # fmt: skip
        span: Span
        if parent is None and not self.roots:
            span = INVALID_SPAN  # no trace to join and none exported: no span, nothing sent on
        else:
            span = self.tracer.start_span(f"POST {route}", context=parent, kind=SpanKind.SERVER)
            span.set_attributes(attributes)
        self.in_flight += 1
        return Entry(self, route, model, who, estimate, t0, span)

    def refused(self, path: str, model: str | None, err: ApiError) -> None:
        """Metrics and the access line of a request refused before its entry existed."""
        route = path[:64]
        self.metrics.requests.labels(model or "unknown", route, str(err.status)).inc()
        if err.status in (429, 503):  # refused for capacity or limits, before any engine saw it
            self.metrics.rejections.labels(err.code or str(err.status)).inc()
        access_log.info("%s %d %s", route, err.status, err.code,
                        extra={"route": route, "status": err.status, "code": err.code})  # fmt: skip


class Entry:
    """One generation request in the ledger."""

    __slots__ = ("done", "endpoint", "estimate", "images", "ledger", "model", "route", "span", "stats", "stream", "t0",
                 "who")  # fmt: skip

    def __init__(self, ledger: Ledger, route: str, model: str, who: str, estimate: int, t0: float, span: Any) -> None:
        self.ledger, self.route, self.model, self.who, self.estimate, self.t0 = ledger, route, model, who, estimate, t0
        self.span = span
        self.endpoint: Endpoint | None = None
        self.stats = StreamStats()
        self.stream = False  # TTFT and time to first answer token are stream measures
        self.images = NO_IMAGES
        self.done = False

    def engine(self, ep: Endpoint) -> None:
        """The engine that answers this request."""
        self.endpoint = ep
        if self.span.is_recording():
            self.span.set_attributes({"qwen_serve.engine.replica_id": ep.replica_id, "qwen_serve.engine.url": ep.url,
                                      "qwen_serve.engine.kind": ep.engine})  # fmt: skip

    def finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        led, m, st = self.ledger, self.ledger.metrics, self.stats
        led.in_flight -= 1
        if st.disconnected:
            status = 499
            m.client_disconnects.labels(self.model).inc()
        elif st.error is not None:
            status = 502
        ok = status == 200
        e2e = time.perf_counter() - self.t0
        model, child = self.model, m.child
        child(m.requests, model, self.route, str(status)).inc()
        outcome = "success" if ok else "error"
        child(m.e2e, model, outcome).observe(e2e)
        if not self.stream:
            child(m.non_streaming, model, outcome).observe(e2e)
        if st.ttft_s is not None:
            child(m.ttft, model).observe(st.ttft_s)
        if st.ttfa_s is not None:
            child(m.ttfa, model).observe(st.ttfa_s)
        if st.gaps_s:
            m.itl.add(model, st.gaps_s)
        usage = st.usage or Usage(0, st.chunks)
        if usage.prompt_tokens:
            child(m.prompt_tokens, model).inc(usage.prompt_tokens)
        reasoning = reasoning_tokens(usage, st) if usage.completion_tokens else 0
        if usage.completion_tokens:
            child(m.completion_tokens, model).inc(usage.completion_tokens)
            child(m.reasoning_tokens, model).inc(reasoning)
            child(m.answer_tokens, model).inc(usage.completion_tokens - reasoning)
            child(m.reasoning_share, model).observe(reasoning / usage.completion_tokens)
        if self.images.count:
            m.images.labels(model).inc(self.images.count)
            m.image_prompt_tokens.labels(model).inc(self.images.tokens)
        led.limiter.settle(self.who, self.estimate, usage.total)
        span = self.span
        if span.is_recording():
            span.set_attributes({
                "http.response.status_code": status,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "qwen_serve.usage.reasoning_tokens": reasoning,
                "qwen_serve.ttft_s": st.ttft_s if st.ttft_s is not None else -1.0,
                "qwen_serve.client_disconnected": st.disconnected,
            })  # fmt: skip
            if not ok:
                span.set_status(Status(StatusCode.ERROR, st.error or f"HTTP {status}"))
        span.end()
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(
            "%s %s %d",
            self.route,
            self.model,
            status,
            extra={
                "route": self.route,
                "model": self.model,
                "status": status,
                "engine": self.endpoint.replica_id if self.endpoint else None,
                "duration_s": round(e2e, 6),
                "ttft_s": st.ttft_s,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "reasoning_tokens": reasoning,
                "images": self.images.count,
                "error": st.error,
            },
        )
