"""Observability shared by the gateway and replicas: JSON logs with a request id, Prometheus
metrics on a per-app registry, OpenTelemetry tracing over OTLP/HTTP."""

from serving.observability.logging import REQUEST_ID, configure_logging, redact
from serving.observability.metrics import GatewayMetrics
from serving.observability.tracing import make_tracer_provider

__all__ = ["REQUEST_ID", "GatewayMetrics", "configure_logging", "make_tracer_provider", "redact"]
