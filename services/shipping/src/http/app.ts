// The HTTP side: shipments for their owners (and admins), the probes, /metrics and the console's
// /internal routes. Thin routes: parse, call a handler, answer; errors as problem details.
import { randomUUID } from "node:crypto";
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import swagger from "@fastify/swagger";
import {
  context as otelContext,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import addFormats from "ajv-formats";
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from "fastify";
import type { Logger } from "pino";
import { type Shipment, ShipmentNotFound, STATUSES } from "../domain.js";
import type { RecentLogs } from "../observe/logs.js";
import type { Metrics } from "../observe/metrics.js";
import { type RecentSpans, SERVICE_ATTRIBUTE } from "../observe/telemetry.js";
import { getShipment, listShipments, type Viewer } from "../shipments.js";
import type { Database } from "../store/db.js";
import { bearer, ServiceCredentials, type TokenVerifier } from "./auth.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { operations } from "./operations.js";
import { PROBLEM_JSON, Problem, problemBody, Unauthorized } from "./problems.js";

export interface AppParts {
  readonly service: string;
  readonly version: string;
  readonly replica: number;
  readonly db: Database;
  readonly verifier: TokenVerifier;
  readonly operatorToken: string | null;
  /** The services that may read here with their own credential. */
  readonly callers?: ServiceCredentials;
  readonly metrics: Metrics;
  readonly spans: RecentSpans;
  readonly logs: RecentLogs;
  readonly log: Logger;
  /** The broker's readiness check (informational: it never takes the service out). */
  readonly broker?: () => Promise<void>;
  readonly maxBodyBytes?: number;
}

export const DESCRIPTION =
  "Shipping: one shipment for each confirmed order, with the carrier and service level its " +
  "destination decides, moved by the carrier from label to delivery.";

const PAGE_MAX = 100;
// The public routes and their methods, for a 405's Allow.
const ROUTES: readonly [RegExp, string][] = [
  [/^\/shipments$/, "GET"],
  [/^\/shipments\/[^/]+$/, "GET"],
];
const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
// Probes, scrapes and the console's polls: too frequent to trace.
const UNTRACED = /^\/(livez|readyz|metrics|internal\/)/;

const problemSchema = {
  type: "object",
  description: "RFC 9457 problem details.",
  properties: {
    type: { type: "string" },
    title: { type: "string" },
    status: { type: "integer" },
    detail: { type: "string" },
    instance: { type: "string" },
  },
  required: ["type", "title", "status"],
};

const shipmentSchema = {
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    order_id: { type: "string" },
    user_id: { type: "string" },
    status: { type: "string", enum: [...STATUSES] },
    carrier: { type: "string" },
    service_level: { type: "string" },
    tracking_number: { type: "string" },
    destination_country: { type: "string", pattern: "^[A-Z]{2}$" },
    created_at: { type: "string", format: "date-time" },
    dispatched_at: { type: ["string", "null"], format: "date-time" },
    delivered_at: { type: ["string", "null"], format: "date-time" },
  },
  required: [
    "id",
    "order_id",
    "user_id",
    "status",
    "carrier",
    "service_level",
    "tracking_number",
    "destination_country",
    "created_at",
    "dispatched_at",
    "delivered_at",
  ],
};

const problems = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        description: `Problem details (${status}).`,
        content: { [PROBLEM_JSON]: { schema: problemSchema } },
      },
    ]),
  );

export function shipmentJson(s: Shipment): Record<string, unknown> {
  return {
    id: s.id,
    order_id: s.orderId,
    user_id: s.userId,
    status: s.status,
    carrier: s.carrier,
    service_level: s.serviceLevel,
    tracking_number: s.trackingNumber,
    destination_country: s.destinationCountry,
    created_at: s.createdAt.toISOString(),
    dispatched_at: s.dispatchedAt?.toISOString() ?? null,
    delivered_at: s.deliveredAt?.toISOString() ?? null,
  };
}

function sendProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  title: string,
  options: Record<string, unknown> & { detail?: string; type?: string } = {},
  headers: Record<string, string> = {},
): FastifyReply {
  return (
    reply
      .code(status)
      .headers(headers)
      .type(PROBLEM_JSON)
      // A Buffer: Fastify would add "; charset=utf-8" to a string's media type.
      .send(
        Buffer.from(
          JSON.stringify(
            problemBody(status, title, {
              ...options,
              instance: request.url.split("?")[0],
              request_id: request.id,
            }),
          ),
        ),
      )
  );
}

// Fastify names where a failing value was; the Python services say query/path/body.
const LOCATIONS: Record<string, string> = {
  querystring: "query",
  params: "path",
  body: "body",
  headers: "header",
};

// What Node's HTTP parser refuses before Fastify sees a request (a request line and headers over
// its 16 KiB, a malformed request, one too slow to arrive) is answered as a problem, as every
// other refusal is.
const UNREAD: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request header fields too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request timeout"],
};

function refuseUnread(error: Error & { code?: string }, socket: Socket): void {
  // A connection reset: nobody is there to answer.
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  const [status, title] = UNREAD[error.code ?? ""] ?? [400, "Bad request"];
  if (socket.writable) {
    const body = JSON.stringify(problemBody(status, title, { detail: "the request was not read" }));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Content-Type: ${PROBLEM_JSON}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

export async function buildApp(
  parts: AppParts,
): Promise<{ app: FastifyInstance; stopping: () => void }> {
  let isStopping = false;
  const app = Fastify({
    logger: false,
    bodyLimit: parts.maxBodyBytes ?? 1024 * 1024,
    genReqId: (request) => {
      const sent = request.headers["x-request-id"];
      return typeof sent === "string" && SAFE_ID.test(sent) ? sent : randomUUID();
    },
    ajv: {
      customOptions: { allErrors: true, coerceTypes: true, removeAdditional: false },
      plugins: [addFormats as never],
    },
    clientErrorHandler: refuseUnread,
  });
  const tracer = trace.getTracer("agora.http");
  parts.metrics.serviceInfo.labels(parts.service, parts.version, String(parts.replica)).set(1);

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: "Shipping", description: DESCRIPTION, version: parts.version },
      components: {
        securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
      },
    },
  });

  // Callback-style, so that what follows (the handler, its statements, its logs) runs inside the
  // request's span: `done` is called within the span's context.
  app.addHook("onRequest", (request, reply, done) => {
    reply.header("x-request-id", request.id);
    if (UNTRACED.test(request.url)) {
      done();
      return;
    }
    const parent = propagation.extract(otelContext.active(), request.headers);
    const span = tracer.startSpan(
      `${request.method} ${request.routeOptions.url ?? "unmatched"}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [SERVICE_ATTRIBUTE]: parts.service,
          "http.request.method": request.method,
          "url.path": request.url.split("?")[0] ?? "",
          "agora.request_id": request.id,
        },
      },
      parent,
    );
    (request as unknown as { span: typeof span }).span = span;
    otelContext.with(trace.setSpan(parent, span), done);
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    parts.metrics.requests
      .labels(parts.service, route, request.method, String(reply.statusCode))
      .inc();
    parts.metrics.latency
      .labels(parts.service, route, request.method)
      .observe(reply.elapsedTime / 1000);
    const span = (request as unknown as { span?: ReturnType<typeof tracer.startSpan> }).span;
    if (span !== undefined) {
      // Logged once per request, with its trace, as the chassis's middleware does (probes and
      // the console's polls are neither traced nor logged).
      const { traceId, spanId } = span.spanContext();
      parts.log.info(
        {
          trace_id: traceId,
          span_id: spanId,
          request_id: request.id,
          method: request.method,
          path: request.url.split("?")[0],
          route,
          status: reply.statusCode,
          duration_ms: Math.round(reply.elapsedTime * 100) / 100,
        },
        "request",
      );
      span.setAttribute("http.response.status_code", reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
  });

  // No route takes this method at this path: a 405 naming the methods the path takes, when the
  // document names the path; otherwise a 404.
  const unrouted = (request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const path = request.url.split("?")[0] ?? "";
    const allowed = [
      ...new Set(ROUTES.filter(([pattern]) => pattern.test(path)).map(([, m]) => m)),
    ];
    if (allowed.length > 0) {
      return sendProblem(
        request,
        reply,
        405,
        "Method not allowed",
        { detail: `${request.method} is not allowed at ${path}` },
        { Allow: allowed.join(", ") },
      );
    }
    return sendProblem(request, reply, 404, "Not found", {
      detail: `nothing at ${request.method} ${path}`,
    });
  };

  app.setErrorHandler((error: FastifyError, request, reply) => {
    // Fastify reads the body of a method that has one (QUERY, a POST) before it finds that no
    // route takes it: what it makes of the body matters less than that nothing is here to ask.
    if (request.is404) return unrouted(request, reply);
    if (error.validation) {
      const where =
        LOCATIONS[error.validationContext ?? ""] ?? error.validationContext ?? "request";
      const errors = error.validation.map((issue) => {
        const missing = (issue.params as { missingProperty?: string }).missingProperty;
        const path = issue.instancePath.split("/").filter(Boolean);
        return {
          loc: [where, ...path, ...(missing ? [missing] : [])],
          msg: issue.message ?? "",
          type: issue.keyword,
        };
      });
      return sendProblem(request, reply, 422, "Invalid request", {
        detail: "the request does not match the schema",
        type: "/problems/validation",
        errors,
      });
    }
    if (error instanceof Problem) {
      return sendProblem(
        request,
        reply,
        error.status,
        error.title,
        { detail: error.detail, type: error.type, ...error.extensions },
        error.headers,
      );
    }
    if (error instanceof ShipmentNotFound) {
      return sendProblem(request, reply, 404, "Shipment not found", {
        detail: error.message,
        type: "/problems/shipment-not-found",
      });
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return sendProblem(
        request,
        reply,
        status,
        error.code === "FST_ERR_CTP_BODY_TOO_LARGE" ? "Request body too large" : "Bad request",
        {
          detail: error.message,
        },
      );
    }
    parts.log.error({ err: error, path: request.url.split("?")[0] }, "request failed");
    return sendProblem(request, reply, 500, "Internal server error", {
      type: "/problems/internal",
    });
  });
  app.setNotFoundHandler(unrouted);

  const callers = parts.callers ?? new ServiceCredentials({});
  // A user's valid token, or a known service's own credential (agora.deps.user_or_service): a
  // service asks on nobody's behalf, so it reads every shipment, as an admin does.
  const viewer = async (request: FastifyRequest): Promise<Viewer> => {
    const token = bearer(request.headers.authorization);
    if (token === null)
      throw new Unauthorized("send an access token: Authorization: Bearer <token>");
    if (ServiceCredentials.isOne(token)) {
      const caller = callers.caller(token);
      if (caller === null)
        throw new Unauthorized("this is for services: send the calling service's own credential");
      return { id: `service:${caller.service}`, isAdmin: true };
    }
    return parts.verifier.verify(token);
  };

  app.get(
    "/shipments",
    {
      schema: {
        summary:
          "The caller's shipments (an admin's: anyone's), of one order if asked, oldest first",
        operationId: "list_shipments",
        security: [{ bearer: [] }],
        querystring: {
          type: "object",
          properties: {
            order_id: { type: "string", format: "uuid", description: "Only this order's." },
            cursor: {
              type: "string",
              maxLength: 4096,
              description: "The next_cursor of the page before.",
            },
            limit: { type: "integer", minimum: 1, maximum: PAGE_MAX, default: 50 },
          },
          additionalProperties: false,
        },
        response: {
          200: {
            type: "object",
            properties: {
              items: { type: "array", items: shipmentSchema },
              next_cursor: { type: ["string", "null"] },
            },
            required: ["items", "next_cursor"],
          },
          ...problems(400, 401, 422, 431),
        },
      },
    },
    async (request) => {
      const reader = await viewer(request);
      const query = request.query as { order_id?: string; cursor?: string; limit: number };
      const page = await listShipments(parts.db, reader, {
        ...(query.order_id === undefined ? {} : { orderId: query.order_id.toLowerCase() }),
        ...(query.cursor === undefined ? {} : { after: decodeCursor(query.cursor) }),
        limit: query.limit,
      });
      return {
        items: page.items.map(shipmentJson),
        next_cursor: page.next ? encodeCursor(page.next) : null,
      };
    },
  );

  app.get(
    "/shipments/:id",
    {
      schema: {
        summary: "One shipment, for its owner or an admin",
        operationId: "get_shipment",
        security: [{ bearer: [] }],
        params: {
          type: "object",
          properties: { id: { type: "string", maxLength: 64 } },
          required: ["id"],
        },
        response: { 200: shipmentSchema, ...problems(401, 404, 422, 431) },
      },
    },
    async (request) => {
      const reader = await viewer(request);
      const { id } = request.params as { id: string };
      return shipmentJson(await getShipment(parts.db, reader, id));
    },
  );

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  operations(app, parts, () => isStopping);

  return {
    app,
    stopping: () => {
      isStopping = true;
    },
  };
}
