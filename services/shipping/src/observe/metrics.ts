// The Prometheus metrics the Python chassis exposes, under the same names and labels.
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export class Metrics {
  readonly registry = new Registry();
  readonly serviceInfo = new Gauge({
    name: "agora_service_info",
    help: "Always 1: which service, version and replica this process serves.",
    labelNames: ["service", "version", "replica"],
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "agora_http_requests_total",
    help: "HTTP requests served, by route template, method and status.",
    labelNames: ["service", "route", "method", "status"],
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "agora_http_request_duration_seconds",
    help: "Time to serve an HTTP request, from first byte in to last byte out.",
    labelNames: ["service", "route", "method"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
    registers: [this.registry],
  });
  readonly published = new Counter({
    name: "agora_outbox_published_total",
    help: "Outbox rows acknowledged by the broker (duplicate: the broker had it already).",
    labelNames: ["service", "outcome"],
    registers: [this.registry],
  });
  readonly consumed = new Counter({
    name: "agora_events_consumed_total",
    help:
      "Messages taken by a consumer, by outcome: handled, duplicate (already in the inbox), " +
      "failed (will be redelivered), dead (sent to the dead letters).",
    labelNames: ["service", "consumer", "outcome"],
    registers: [this.registry],
  });
  readonly handling = new Histogram({
    name: "agora_event_handling_seconds",
    help: "Time from taking a message to acknowledging it (the handler's transaction included).",
    labelNames: ["service", "consumer"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    registers: [this.registry],
  });
  readonly received = new Counter({
    name: "agora_messages_received_total",
    help:
      "Messages a service took, by sender (the envelope's source; unknown when unreadable) and " +
      "kind (event or command). Each counts once per subscription, when settled.",
    labelNames: ["service", "source", "kind"],
    registers: [this.registry],
  });
}
