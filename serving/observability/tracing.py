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
# The sampler of a provider with nowhere to export: a request without a caller's trace gets no
# span at all (``records_roots`` False), one with a caller's trace follows its sampled flag.
UNSAMPLED_ROOTS = ParentBased(ALWAYS_OFF)


def make_tracer_provider(t: TelemetrySettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider for one app. ``exporter`` (tests: ``InMemorySpanExporter``) wins over OTLP.

    With nowhere to export, spans are not recorded (``UNSAMPLED_ROOTS``): a request without a
    caller's ``traceparent`` gets no span and sends none to the engine, so it costs nothing. A
    caller's ``traceparent`` is still followed and forwarded, so an engine that exports traces keeps
    the caller's trace whole."""
    if exporter is None and t.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=t.otlp_endpoint.rstrip("/") + "/v1/traces")
    resource = Resource.create({"service.name": t.service_name})
    if exporter is None:
        return TracerProvider(resource=resource, sampler=UNSAMPLED_ROOTS)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def records_roots(provider: TracerProvider) -> bool:
    """Whether a request that arrives without a trace of its own gets a span (spans are exported)."""
    return provider.sampler is not UNSAMPLED_ROOTS


def inject_headers(span: Span, headers: MutableMapping[str, str]) -> None:
    """Write ``traceparent`` (and ``tracestate``) for ``span`` into ``headers``; nothing for no span
    (the propagator writes nothing for an invalid span context)."""
    PROPAGATOR.inject(headers, context=set_span_in_context(span))
