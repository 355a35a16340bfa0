// Structured logs: one JSON object a line, carrying service, replica and trace id, in the shape
// the Python services write (agora/logs.py: "event", "level", "timestamp"...). The process keeps
// its last lines for GET /internal/logs.
import { Writable } from "node:stream";
import { trace } from "@opentelemetry/api";
import pino, { type Logger } from "pino";
import { Recent } from "./telemetry.js";

export const LOGS_KEPT = 5_000;

interface LogLine {
  readonly traceId: string | null;
  readonly service: string;
  readonly line: string;
}

export class RecentLogs extends Writable {
  readonly lines = new Recent<LogLine>(LOGS_KEPT);

  override _write(chunk: Buffer, _: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (!line) continue;
      try {
        const event = JSON.parse(line) as { trace_id?: unknown; service?: unknown };
        this.lines.add({
          traceId: typeof event.trace_id === "string" ? event.trace_id : null,
          service: String(event.service),
          line,
        });
      } catch {
        // not a line of ours
      }
    }
    done();
  }

  find(options: { service: string; traceId?: string; limit: number }): unknown[] {
    return this.lines
      .newest(
        (line) =>
          (options.traceId === undefined || line.traceId === options.traceId) &&
          line.service === options.service,
        options.limit,
      )
      .map((line) => JSON.parse(line.line));
  }
}

export function makeLogger(
  service: string,
  replica: number,
  level: string,
  recent: RecentLogs,
  out: NodeJS.WritableStream = process.stdout,
): Logger {
  return pino(
    {
      level,
      messageKey: "event",
      base: { service, replica },
      timestamp: () => `,"timestamp":"${new Date().toISOString()}"`,
      formatters: { level: (label) => ({ level: label }) },
      mixin() {
        const span = trace.getActiveSpan()?.spanContext();
        return span ? { trace_id: span.traceId, span_id: span.spanId } : {};
      },
    },
    pino.multistream([
      { stream: out, level: level as pino.Level },
      { stream: recent, level: level as pino.Level },
    ]),
  );
}
