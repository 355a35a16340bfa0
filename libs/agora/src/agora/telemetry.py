"""OpenTelemetry tracing: one tracer provider per process, W3C trace context in and out."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

_configured = False


def configure_tracing(
    service: str,
    *,
    version: str = "0.1.0",
    replica: int = 0,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """Install a tracer provider naming this service. The first call in a process wins."""
    global _configured
    provider = trace.get_tracer_provider()
    if _configured and isinstance(provider, TracerProvider):
        return provider
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.version": version,
                "service.instance.id": f"{service}-{replica}",
            }
        )
    )
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context a caller sent (``traceparent``), or an empty one."""
    return propagate.extract(headers)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to outgoing headers."""
    propagate.inject(headers)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


__all__ = ["SpanExporter", "configure_tracing", "current_trace_id", "extract", "inject"]
