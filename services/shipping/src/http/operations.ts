// What every Agora process answers besides its API: /livez, /readyz, /metrics, and the console's
// /internal routes (agora/observe.py: the same JSON shapes), behind the operator's token. Left
// out of the OpenAPI document.
import type { FastifyInstance } from "fastify";
import type { AppParts } from "./app.js";
import { OperatorGuard } from "./auth.js";

export function operations(app: FastifyInstance, parts: AppParts, stopping: () => boolean): void {
  const guard = new OperatorGuard(parts.operatorToken);
  app.get("/livez", { schema: { hide: true } }, async () => ({ status: "alive" }));

  app.get("/readyz", { schema: { hide: true } }, async (_, reply) => {
    const identity = { service: parts.service, version: parts.version, replica: parts.replica };
    if (stopping()) {
      return reply
        .code(503)
        .send({ status: "stopping", reason: "stopping", ...identity, checks: {} });
    }
    const checks: Record<string, Record<string, unknown>> = {
      database: await run(() => parts.db.check()),
    };
    const ready = checks.database?.ok === true;
    if (parts.broker !== undefined)
      checks.broker = { ...(await run(parts.broker)), required: false };
    return reply
      .code(ready ? 200 : 503)
      .send({ status: ready ? "ready" : "not ready", ...identity, checks });
  });

  app.get("/metrics", { schema: { hide: true } }, async (_, reply) =>
    reply.type(parts.metrics.registry.contentType).send(await parts.metrics.registry.metrics()),
  );

  const newest = {
    type: "object",
    properties: {
      trace_id: { type: "string", pattern: "^[0-9a-fA-F]{32}$" },
      limit: { type: "integer", minimum: 1, maximum: 2000, default: 200 },
    },
  };
  const identity = { service: parts.service, replica: parts.replica };
  app.register(async (internal) => {
    internal.addHook("onRequest", async (request) => guard.check(request.headers.authorization));
    for (const [kind, kept] of [
      ["spans", parts.spans],
      ["logs", parts.logs],
    ] as const) {
      internal.get(
        `/internal/${kind}`,
        { schema: { hide: true, querystring: newest } },
        async (request) => {
          const query = request.query as { trace_id?: string; limit: number };
          const found = kept.find({
            service: parts.service,
            ...(query.trace_id ? { traceId: query.trace_id.toLowerCase() } : {}),
            limit: query.limit,
          });
          return { ...identity, [kind]: found };
        },
      );
    }
    internal.get("/internal/outbox", { schema: { hide: true } }, async () => {
      const [row] = await parts.db.transaction((tx) =>
        tx.all<{ pending: number | string; oldest: unknown }>(
          "SELECT count(*) AS pending, min(created_at) AS oldest FROM agora_outbox WHERE status = 'pending'",
        ),
      );
      const oldest = row?.oldest ? new Date(row.oldest as string) : null;
      return {
        ...identity,
        outbox: true,
        pending: Number(row?.pending ?? 0),
        oldest_pending_seconds: oldest ? Math.max((Date.now() - oldest.getTime()) / 1000, 0) : null,
      };
    });
  });
}

async function run(check: () => Promise<void>): Promise<Record<string, unknown>> {
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), 2000).unref()),
    ]);
    return { ok: true };
  } catch (error) {
    return {
      ok: false,
      error: error instanceof Error ? error.message || error.name : String(error),
    };
  }
}
