// OpenTelemetry tracing: one tracer provider per process, W3C trace context in and out, the last
// finished spans kept in memory for GET /internal/spans (agora/telemetry.py, same record shape).

import {
  type Attributes,
  type Context,
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  type ReadableSpan,
  type Span,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";

/** The span attribute naming the service a span belongs to. */
export const SERVICE_ATTRIBUTE = "agora.service";
export const SPANS_KEPT = 2_000;

/** The last `capacity` items, oldest dropped first. */
export class Recent<T> {
  private readonly items: T[] = [];
  constructor(private readonly capacity: number) {}

  add(item: T): void {
    this.items.push(item);
    if (this.items.length > this.capacity) this.items.shift();
  }

  newest(match: (item: T) => boolean, limit: number): T[] {
    const found: T[] = [];
    for (let i = this.items.length - 1; i >= 0 && found.length < limit; i--) {
      const item = this.items[i] as T;
      if (match(item)) found.push(item);
    }
    return found;
  }
}

const KINDS: Record<number, string> = {
  [SpanKind.INTERNAL]: "internal",
  [SpanKind.SERVER]: "server",
  [SpanKind.CLIENT]: "client",
  [SpanKind.PRODUCER]: "producer",
  [SpanKind.CONSUMER]: "consumer",
};

const seconds = ([s, ns]: [number, number]) => s + ns / 1e9;

export class RecentSpans implements SpanProcessor {
  readonly spans = new Recent<ReadableSpan>(SPANS_KEPT);

  constructor(
    private readonly service: string,
    private readonly replica: number,
  ) {}

  onStart(span: Span, parent: Context): void {
    // A span begun inside another of this process belongs to the same service.
    const parentSpan = trace.getSpan(parent) as unknown as ReadableSpan | undefined;
    const service = parentSpan?.attributes?.[SERVICE_ATTRIBUTE];
    if (span.attributes[SERVICE_ATTRIBUTE] === undefined) {
      span.setAttribute(SERVICE_ATTRIBUTE, typeof service === "string" ? service : this.service);
    }
  }

  onEnd(span: ReadableSpan): void {
    this.spans.add(span);
  }

  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}

  find(options: { service: string; traceId?: string; limit: number }): Record<string, unknown>[] {
    return this.spans
      .newest(
        (span) =>
          (options.traceId === undefined || span.spanContext().traceId === options.traceId) &&
          span.attributes[SERVICE_ATTRIBUTE] === options.service,
        options.limit,
      )
      .map((span) => this.record(span));
  }

  /** A finished span as agora.telemetry.span_record writes it. */
  record(span: ReadableSpan): Record<string, unknown> {
    const ctx = span.spanContext();
    const start = seconds(span.startTime);
    return {
      trace_id: ctx.traceId,
      span_id: ctx.spanId,
      parent_id: span.parentSpanContext?.spanId ?? null,
      name: span.name,
      kind: KINDS[span.kind] ?? "internal",
      service: span.attributes[SERVICE_ATTRIBUTE] ?? this.service,
      replica: this.replica,
      start,
      duration_ms: seconds(span.duration) * 1000,
      status: span.status.code === SpanStatusCode.ERROR ? "error" : "ok",
      attributes: { ...span.attributes },
    };
  }
}

let installed: RecentSpans | null = null;

/** Installs the process's tracer provider (the first call wins) and returns its recent spans.
 * With OTEL_EXPORTER_OTLP_ENDPOINT set, spans also go over OTLP/HTTP to that collector, as the
 * Python services' do (agora.telemetry). */
export function configureTracing(
  service: string,
  version: string,
  replica: number,
  env: NodeJS.ProcessEnv = process.env,
): RecentSpans {
  if (installed !== null) return installed;
  const recent = new RecentSpans(service, replica);
  const processors: SpanProcessor[] = [recent];
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
    // Protobuf over HTTP, as the Python services export; the exporter reads the endpoint and its
    // headers from the same variables.
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  }
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      "service.name": service,
      "service.version": version,
      "service.instance.id": `${service}-${replica}`,
      "agora.replica": replica,
    }),
    spanProcessors: processors,
  });
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  installed = recent;
  return recent;
}

export const tracer = () => trace.getTracer("agora.messaging");

const fromRecord: TextMapGetter<Record<string, string | undefined>> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};

/** The context a traceparent (from a message or a row) names; the root context without one. */
export function contextFrom(traceparent: string | null | undefined): Context {
  return propagation.extract(context.active(), traceparent ? { traceparent } : {}, fromRecord);
}

/** The span of one message on NATS, as the Python chassis names it: the relay's
 * "<subject> publish" (a producer) or a consumer's "<subject> process", a child of the span
 * `traceparent` names (a root without one). */
export function messageSpan(
  operation: "publish" | "process",
  subject: string,
  service: string,
  traceparent: string | null | undefined,
  attributes: Attributes,
): import("@opentelemetry/api").Span {
  return tracer().startSpan(
    `${subject} ${operation}`,
    {
      kind: operation === "publish" ? SpanKind.PRODUCER : SpanKind.CONSUMER,
      attributes: {
        [SERVICE_ATTRIBUTE]: service,
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        ...attributes,
      },
    },
    contextFrom(traceparent),
  );
}

/** The traceparent of the current span, to carry to the next message. */
export function currentTraceparent(): string | null {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent ?? null;
}

/** The traceparent that makes the next message's span a child of `span`. */
export function traceparentOf(span: import("@opentelemetry/api").Span): string | null {
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), carrier);
  return carrier.traceparent ?? null;
}
