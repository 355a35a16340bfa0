// Each SQL statement the store runs as a client span, when the settings ask for it
// (AGORA_TRACE_STATEMENTS, ADR 41): a child of the message's or request's span that ran it, with
// the SQL as sent (placeholders, never the values bound to them), as the Python services' are.
// better-sqlite3 has no OpenTelemetry instrumentation, and pg's would also make spans of the
// BEGIN and COMMIT the store sends itself, which the Python services leave out: so the store's
// own two execution points (Tx.all, Tx.run) are wrapped, the same way for both stores.
import {
  context,
  isSpanContextValid,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";

export type DbSystem = "sqlite" | "postgresql";

/** Runs one statement (`run`), given the SQL as the driver is sent it. */
export type Observe = <T>(system: DbSystem, sql: string, run: () => T | Promise<T>) => Promise<T>;

/** No span, nothing measured: what a store runs with statements not asked for. */
export const unobserved: Observe = async (_system, _sql, run) => run();

const tracer = () => trace.getTracer("agora.store");

/** The statement's operation (SELECT, INSERT, ...) and the first table it names. */
export function operationAndTable(sql: string): { operation: string; table: string | null } {
  const operation = (/^\s*([A-Za-z]+)/.exec(sql)?.[1] ?? "SQL").toUpperCase();
  const named = /\b(?:FROM|INTO|UPDATE|JOIN)\s+"?([A-Za-z_][\w.]*)"?/i.exec(sql);
  return { operation, table: named?.[1] ?? null };
}

/** The span's name: the operation and the table ("SELECT shipments"), or the operation alone. */
export function statementName(sql: string): string {
  const { operation, table } = operationAndTable(sql);
  return table === null ? operation : `${operation} ${table}`;
}

/** Each statement a span, under the current one; a statement run inside no span (the relay
 * looking at its outbox, a readiness check) is no span: it would be a trace of its own, many a
 * second, pushing the messages' spans out of those the process keeps for the console. */
export const observed: Observe = async (system, sql, run) => {
  const parent = trace.getSpanContext(context.active());
  if (parent === undefined || !isSpanContextValid(parent)) return run();
  const { operation, table } = operationAndTable(sql);
  return tracer().startActiveSpan(
    statementName(sql),
    {
      kind: SpanKind.CLIENT,
      attributes: {
        "db.system": system,
        "db.statement": sql,
        "db.operation": operation,
        ...(table === null ? {} : { "db.sql.table": table }),
      },
    },
    async (span: Span) => {
      try {
        return await run();
      } catch (error) {
        // The error's kind and message: a driver's message names no bound value.
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
        throw error;
      } finally {
        span.end();
      }
    },
  );
};

/** How a store observes its statements: spans when asked for, nothing otherwise. */
export const observer = (traceStatements: boolean): Observe =>
  traceStatements ? observed : unobserved;
