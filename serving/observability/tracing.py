"""OpenTelemetry: a per-app ``TracerProvider``, exporting over OTLP/HTTP when an endpoint is set.

W3C trace context: the gateway continues an incoming ``traceparent`` and forwards its own span's
context to the engine (``inject_headers``), so engine spans join the same trace.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serving.config.settings import TelemetrySettings

PROPAGATOR = TraceContextTextMapPropagator()


def make_tracer_provider(t: TelemetrySettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider for one app. ``exporter`` (tests: ``InMemorySpanExporter``) wins over OTLP.

    With nowhere to export, spans are not recorded (``ParentBased(ALWAYS_OFF)``): a request's span
    costs nothing, and its context still goes to the engine. A caller's sampled ``traceparent`` is
    still followed, so an engine that exports traces keeps the caller's trace whole."""
    if exporter is None and t.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=t.otlp_endpoint.rstrip("/") + "/v1/traces")
    resource = Resource.create({"service.name": t.service_name})
    if exporter is None:
        return TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_OFF))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def inject_headers(span: Span, headers: MutableMapping[str, str]) -> None:
    """Write ``traceparent`` (and ``tracestate``) for ``span`` into ``headers``."""
    PROPAGATOR.inject(headers, context=set_span_in_context(span))
