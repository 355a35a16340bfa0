"""OpenTelemetry tracing: one tracer provider per process, W3C trace context in and out.

The process keeps its last finished spans in memory (:func:`recent_spans`), where the console
reads them through ``GET /internal/spans``; with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set they also
go to that collector (Jaeger, Tempo), which can keep them longer.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from sqlalchemy import Engine

# The span attribute naming the service a span belongs to. The resource names the process's
# service, but a process may hold several services (a test builds one app after another, the
# one-process mode runs them all), and the first to configure tracing names the resource: so the
# chassis's entry points (HTTP server, consumer, relay) set this, and spans begun inside them
# inherit it from their parent (see :class:`RecentSpans`).
SERVICE = "agora.service"
# Either names the collector; the exporter reads them itself.
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SPANS_KEPT = 2_000

_T = TypeVar("_T")


class Recent(Generic[_T]):
    """The last ``capacity`` items a process recorded, oldest dropped first. Items are added
    from whichever thread finishes them and read from the event loop's."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[_T] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, item: _T) -> None:
        with self._lock:
            self._items.append(item)

    def newest(self, match: Callable[[_T], bool], limit: int) -> list[_T]:
        """Up to ``limit`` items that ``match``, the newest first."""
        with self._lock:
            items = list(self._items)
        found: list[_T] = []
        for item in reversed(items):
            if match(item):
                found.append(item)
                if len(found) >= limit:
                    break
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def span_service(span: object) -> str | None:
    """The service a span was recorded for, when the span says so (a span of this process)."""
    attributes = getattr(span, "attributes", None)
    service = attributes.get(SERVICE) if attributes is not None else None
    return service if isinstance(service, str) else None


class RecentSpans(SpanProcessor):
    """Keeps the process's last finished spans. They are kept as they are and turned into plain
    dicts (:func:`span_record`) only when read: the conversion costs more than keeping them,
    and most spans are dropped unread."""

    def __init__(self, capacity: int = SPANS_KEPT) -> None:
        self.spans: Recent[ReadableSpan] = Recent(capacity)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # A span begun inside another of this process belongs to the same service.
        if span_service(span) is None:
            service = span_service(trace.get_current_span(parent_context))
            if service is not None:
                span.set_attribute(SERVICE, service)

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.add(span)

    def find(
        self, *, service: str | None = None, trace_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """The newest spans (of ``service``, of the trace ``trace_id``), as plain dicts."""
        wanted = int(trace_id, 16) if trace_id is not None else None

        def match(span: ReadableSpan) -> bool:
            context = span.context
            if wanted is not None and (context is None or context.trace_id != wanted):
                return False
            return service is None or _service_of(span) == service

        return [span_record(span) for span in self.spans.newest(match, limit)]


def _service_of(span: ReadableSpan) -> str:
    return span_service(span) or str(span.resource.attributes.get("service.name", "unknown"))


def _replica_of(span: ReadableSpan) -> int:
    replica = span.resource.attributes.get("agora.replica", 0)
    return replica if isinstance(replica, int) else 0


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON-safe data."""
    context = span.context
    start = span.start_time or 0
    end = span.end_time or start
    return {
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "service": _service_of(span),
        "replica": _replica_of(span),
        "start": start / 1e9,
        "duration_ms": (end - start) / 1e6,
        "status": "error" if span.status.status_code is StatusCode.ERROR else "ok",
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
    }


def _plain(value: object) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return str(value)


_configured = False
_recent = RecentSpans()


def recent_spans() -> RecentSpans:
    """The process's recent spans (filled once :func:`configure_tracing` has run)."""
    return _recent


def tracer_provider(
    service: str,
    *,
    version: str = "0.1.0",
    replica: int = 0,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """A tracer provider naming this service, not yet installed. Its spans go to ``processors``,
    and to the OTLP collector the environment names, if any (the standard OpenTelemetry
    variables, read by the exporter itself)."""
    provider = TracerProvider(resource=service_resource(service, version, replica))
    for processor in processors:
        provider.add_span_processor(processor)
    if any(os.environ.get(name) for name in OTLP_ENDPOINT_VARIABLES):
        # Imported here: a process that exports nothing need not load the exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(AsOwnService(OTLPSpanExporter())))
    return provider


def service_resource(service: str, version: str, replica: int) -> Resource:
    """What names one replica of ``service`` to a collector."""
    return Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "service.instance.id": f"{service}-{replica}",
            "agora.replica": replica,
        }
    )


class AsOwnService(SpanExporter):
    """Exports each span as its own service's. A process's resource names one service (the first
    to configure tracing), but a process may run several (a group, ADR 53): a span that names
    another (``agora.service``, which :class:`RecentSpans` gives every span begun inside
    another) goes out with the process's resource renamed for that service, so that a collector
    shows each service's spans under its own name."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._resources: dict[str, Resource] = {}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([self._as_own(span) for span in spans])

    def _as_own(self, span: ReadableSpan) -> ReadableSpan:
        service = span_service(span)
        if service is None or service == span.resource.attributes.get("service.name"):
            return span
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=self._resource(service, span.resource),
            attributes=span.attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _resource(self, service: str, process: Resource) -> Resource:
        if service not in self._resources:
            replica = process.attributes.get("agora.replica", 0)
            named = {"service.name": service, "service.instance.id": f"{service}-{replica}"}
            self._resources[service] = process.merge(Resource(named))
        return self._resources[service]

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def configure_tracing(
    service: str,
    *,
    version: str = "0.1.0",
    replica: int = 0,
    processors: tuple[SpanProcessor, ...] = (),
    trace_statements: bool = False,
) -> TracerProvider:
    """Install a tracer provider naming this service, keeping its recent spans in memory and
    exporting them over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. The first call in a
    process wins; any call with ``trace_statements`` (the settings' ``trace_statements``,
    ``AGORA_TRACE_STATEMENTS``) makes Redis commands spans.

    Statements and commands are spans only when asked for, because of what they cost: 50-95 µs
    of CPU a statement, 10 % more of catalog's CPU per product read and 10 % fewer reads a
    second, about 3-4 ms a checkout across the services (ADR 41)."""
    global _configured
    if trace_statements:
        trace_commands()
    provider = trace.get_tracer_provider()
    if _configured and isinstance(provider, TracerProvider):
        return provider
    provider = tracer_provider(
        service, version=version, replica=replica, processors=(_recent, *processors)
    )
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def trace_commands() -> None:
    """Make each Redis command a client span, in every client of the process, made before or
    after, named by the command and showing ``HSET ? ? ?``: never a key or value."""
    # Imported here, as what follows: a process that traces none need not load them.
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=_InsideOthers())


def trace_statements(engine: Engine) -> None:
    """Make each statement ``engine`` runs a client span, a child of the span that ran it (a
    request's, a message's), with its SQL as sent: placeholders, never the values bound to them,
    and no comment added to it (``enable_commenter`` off). The unit of work calls it when the
    settings' ``trace_statements`` asks for it (ADR 41). Spans go to the process's tracer
    provider once :func:`configure_tracing` has run, so the engine may be made before.

    SQLAlchemy's layer, not asyncpg's: it sees both stores (SQLite through the same engine), and
    instrumenting asyncpg too would give each PostgreSQL statement two spans (ADR 41)."""
    from opentelemetry.instrumentation.sqlalchemy import version
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.semconv.metrics import MetricInstruments

    # The instrumentation's own name and version: the scope its spans are recorded in.
    scope = ("opentelemetry.instrumentation.sqlalchemy", version.__version__)
    # What it counts the pool's connections with: Agora's own metrics are Prometheus's, so this
    # goes nowhere unless a meter provider is installed.
    connections = metrics.get_meter(*scope).create_up_down_counter(
        MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
        unit="connections",
        description="Connections of the pool, by state.",
    )
    EngineTracer(  # type: ignore[no-untyped-call]  # the instrumentation has no annotations
        _InsideOthers().get_tracer(*scope), engine, connections, enable_commenter=False
    )


class _InsideOthers(trace.TracerProvider):
    """The process's tracers, starting a statement's or command's span only inside another
    span: what a loop runs on its own (the relay looking at its outbox, a readiness check) would
    each be a trace of one span, many a second, pushing the requests' out of the spans kept."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Inside(trace.get_tracer_provider().get_tracer(*args, **kwargs))


class _Inside(trace.Tracer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> trace.Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, context, *args, **kwargs)

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # the same, as a plain context manager
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        if not trace.get_current_span(context).get_span_context().is_valid:
            yield trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, context, *args, **kwargs) as span:
            yield span


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context a caller sent (``traceparent``), or an empty one."""
    return propagate.extract(headers)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to outgoing headers."""
    propagate.inject(headers)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


__all__ = [
    "SERVICE",
    "Recent",
    "RecentSpans",
    "SpanExporter",
    "configure_tracing",
    "current_trace_id",
    "extract",
    "inject",
    "recent_spans",
    "span_record",
    "trace_commands",
    "trace_statements",
    "tracer_provider",
]
