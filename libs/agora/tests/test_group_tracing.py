"""A process that runs several services (a group, ADR 53) exports each span as its own service's:
the process's resource names the first service to configure tracing, but a collector must show
cart's spans, and those begun inside them, as cart's."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agora.telemetry import SERVICE, AsOwnService, RecentSpans, service_resource


def test_each_span_goes_out_with_the_resource_of_its_own_service() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=service_resource("catalog", "1.2.3", 2))
    provider.add_span_processor(RecentSpans())  # gives a span begun inside another its service
    provider.add_span_processor(SimpleSpanProcessor(AsOwnService(exported)))
    tracer = provider.get_tracer("test")

    with (
        tracer.start_as_current_span("GET /cart", attributes={SERVICE: "cart"}),
        tracer.start_as_current_span("GET catalog"),  # names no service of its own
    ):
        pass
    with tracer.start_as_current_span("GET /products/{sku}", attributes={SERVICE: "catalog"}):
        pass
    with tracer.start_as_current_span("outside any service"):
        pass

    resources = {
        span.name: (
            span.resource.attributes["service.name"],
            span.resource.attributes["service.instance.id"],
            span.resource.attributes["service.version"],
        )
        for span in exported.get_finished_spans()
    }
    assert resources == {
        "GET /cart": ("cart", "cart-2", "1.2.3"),
        "GET catalog": ("cart", "cart-2", "1.2.3"),
        "GET /products/{sku}": ("catalog", "catalog-2", "1.2.3"),
        "outside any service": ("catalog", "catalog-2", "1.2.3"),
    }
    spans = {span.name: span for span in exported.get_finished_spans()}
    call, request = spans["GET catalog"], spans["GET /cart"]
    # The copy is the same span: its parent and its times are kept.
    assert call.parent is not None
    assert request.context is not None
    assert call.parent.span_id == request.context.span_id
    assert call.start_time is not None
    assert call.end_time is not None
