// Shipping's SQL statements as spans, when AGORA_TRACE_STATEMENTS asks for them (ADR 41), on
// both stores: each one a client span under the message or request that ran it, named by its
// operation and table, showing its SQL with placeholders and never the values bound to them;
// none for the BEGIN and COMMIT, none for a statement run inside no span, none when not asked.
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type Span, trace } from "@opentelemetry/api";
import { statementName } from "../src/observe/statements.js";
import { configureTracing } from "../src/observe/telemetry.js";
import { readSettings } from "../src/settings.js";
import { type Database, openDatabase } from "../src/store/db.js";
import { CONFIRMED, envelope, OPERATOR, onEachStoreStarted, TRACE_ID } from "./broker.js";
import { eventually, natsServerOrSkip, ORDER, onEachStore } from "./support.js";

// What a statement is sent with: it must show in no span.
const SECRET = "card-4242-and-an-address";
const recent = configureTracing("shipping", "0.1.0", 0);

interface Recorded {
  trace_id: string;
  span_id: string;
  parent_id: string | null;
  name: string;
  kind: string;
  service: string;
  attributes: Record<string, unknown>;
}

const spansOf = (traceId: string) =>
  recent.find({ service: "shipping", traceId, limit: 2_000 }) as unknown as Recorded[];
const every = () => recent.find({ service: "shipping", limit: 2_000 }) as unknown as Recorded[];
const systemOf = (url: string) => (url.startsWith("sqlite") ? "sqlite" : "postgresql");

/** Runs `work` inside a span of the test's own, as a consumer runs a message's handler. */
async function inside<T>(name: string, work: () => Promise<T>): Promise<[Span, T]> {
  return trace.getTracer("test").startActiveSpan(name, async (span): Promise<[Span, T]> => {
    try {
      return [span, await work()];
    } finally {
      span.end();
    }
  });
}

describe("statement names", () => {
  test("name the operation and the first table, as the Python services' spans do", () => {
    assert.equal(
      statementName("SELECT id, status FROM shipments WHERE order_id = $1"),
      "SELECT shipments",
    );
    assert.equal(
      statementName("  insert into agora_outbox (id) VALUES (?)"),
      "INSERT agora_outbox",
    );
    assert.equal(statementName("UPDATE shipments SET status = $1"), "UPDATE shipments");
    assert.equal(statementName('DELETE FROM "agora_inbox" WHERE id = $1'), "DELETE agora_inbox");
    assert.equal(statementName("SELECT 1"), "SELECT");
  });
});

describe("the setting", () => {
  test("is off unless AGORA_TRACE_STATEMENTS says on, in the words pydantic takes", () => {
    assert.equal(readSettings({}).traceStatements, false);
    for (const off of ["", "false", "0", "no", "off"]) {
      assert.equal(readSettings({ AGORA_TRACE_STATEMENTS: off }).traceStatements, false, off);
    }
    for (const on of ["true", "1", "yes", "on", "TRUE"]) {
      assert.equal(readSettings({ AGORA_TRACE_STATEMENTS: on }).traceStatements, true, on);
    }
    assert.throws(
      () => readSettings({ AGORA_TRACE_STATEMENTS: "sometimes" }),
      /AGORA_TRACE_STATEMENTS=sometimes is neither on nor off/,
    );
  });
});

onEachStore("statements as spans", (store) => {
  let traced: Database;
  let quiet: Database;
  const table = `notes_${randomUUID().slice(0, 8)}`;

  before(async () => {
    traced = openDatabase(store(), { traceStatements: true });
    quiet = openDatabase(store(), { traceStatements: false });
    await traced.transaction((tx) => tx.run(`CREATE TABLE ${table} (id TEXT, body TEXT)`));
  });
  after(async () => {
    await traced.close();
    await quiet.close();
  });

  test("each statement is a client span under the one that ran it, without its values", async () => {
    const system = systemOf(store());
    const [parent, read] = await inside("handle a message", () =>
      traced.transaction(async (tx) => {
        await tx.run(`INSERT INTO ${table} (id, body) VALUES ($1, $2)`, ["n-1", SECRET]);
        return tx.all<{ body: string }>(`SELECT body FROM ${table} WHERE id = $1`, ["n-1"]);
      }),
    );
    assert.deepEqual(read, [{ body: SECRET }]);

    const { traceId, spanId } = parent.spanContext();
    const spans = spansOf(traceId);
    // One span a statement: none for the BEGIN and the COMMIT the store sends itself.
    const statements = spans.filter((span) => span.kind === "client");
    assert.deepEqual(statements.map((span) => span.name).sort(), [
      `INSERT ${table}`,
      `SELECT ${table}`,
    ]);
    const mark = system === "sqlite" ? ["?", "?"] : ["$1", "$2"];
    assert.deepEqual(statements.map((span) => span.attributes["db.statement"]).sort(), [
      `INSERT INTO ${table} (id, body) VALUES (${mark[0]}, ${mark[1]})`,
      `SELECT body FROM ${table} WHERE id = ${mark[0]}`,
    ]);
    for (const span of statements) {
      assert.equal(span.parent_id, spanId);
      assert.equal(span.trace_id, traceId);
      assert.equal(span.service, "shipping");
      assert.equal(span.attributes["db.system"], system);
    }
    assert.ok(!JSON.stringify(spans).includes(SECRET), "a value shows in a span");
  });

  test("a statement that fails is a span with an error, and the transaction rolls back", async () => {
    const [parent, failed] = await inside("handle a bad message", () =>
      traced
        .transaction((tx) => tx.run(`INSERT INTO ${table} (no_such_column) VALUES ($1)`, [SECRET]))
        .then(
          () => null,
          (error: Error) => error,
        ),
    );
    assert.ok(failed instanceof Error);
    const [statement] = spansOf(parent.spanContext().traceId).filter((s) => s.kind === "client");
    assert.equal(statement?.name, `INSERT ${table}`);
    assert.ok(!JSON.stringify(spansOf(parent.spanContext().traceId)).includes(SECRET));
  });

  test("a statement run inside no span is no span", async () => {
    const marker = `SELECT id FROM ${table} WHERE body = $1 AND id <> 'alone'`;
    await traced.transaction((tx) => tx.all(marker, ["x"]));
    assert.ok(!every().some((span) => String(span.attributes["db.statement"]).includes("'alone'")));
  });

  test("no statement is a span unless asked for", async () => {
    const [parent] = await inside("read a note", () =>
      quiet.transaction((tx) => tx.all(`SELECT body FROM ${table}`)),
    );
    const spans = spansOf(parent.spanContext().traceId);
    assert.deepEqual(
      spans.map((span) => span.name),
      ["read a note"],
    );
  });
});

describe("shipping with statements traced", natsServerOrSkip(), () => {
  const env = {
    AGORA_TRACE_STATEMENTS: "true",
    // notifications may read here with agora-service.notifications.s3cret
    AGORA_SERVICE_CALLERS: JSON.stringify({
      notifications: createHash("sha256").update("s3cret").digest("hex"),
    }),
  };
  onEachStoreStarted("a confirmed order", env, (bench, store) => {
    test("shows the statements its message ran under the message's span", async () => {
      const system = systemOf(store());
      const order = { ...ORDER, order_id: randomUUID() };
      await bench().publish(envelope(order));
      const internal = async () =>
        (
          await bench().service.app.inject({
            url: `/internal/spans?trace_id=${TRACE_ID}&limit=2000`,
            headers: { authorization: OPERATOR },
          })
        ).json() as { spans: Recorded[] };

      const [consumed, statements] = await eventually(async () => {
        const { spans } = await internal();
        const consumed = spans.filter(
          (span) => span.kind === "consumer" && span.name === `${CONFIRMED} process`,
        );
        const ids = new Set(consumed.map((span) => span.span_id));
        const under = spans.filter(
          (span) =>
            span.attributes["db.system"] === system &&
            span.parent_id !== null &&
            ids.has(span.parent_id),
        );
        return under.some((span) => span.name === "INSERT shipments")
          ? ([consumed, under] as const)
          : null;
      });
      assert.ok(consumed.length >= 1);
      for (const span of statements) {
        assert.equal(span.kind, "client");
        assert.equal(span.service, "shipping");
        assert.match(String(span.attributes["db.statement"]), /^(SELECT|INSERT|UPDATE|DELETE)\b/);
      }
    });

    test("shows the statements a request ran under the request's span", async () => {
      const traceId = randomUUID().replaceAll("-", "");
      const read = await bench().service.app.inject({
        method: "GET",
        url: `/shipments?order_id=${randomUUID()}`,
        headers: {
          authorization: "Bearer agora-service.notifications.s3cret",
          traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        },
      });
      assert.equal(read.statusCode, 200);
      const spans = spansOf(traceId);
      const [server] = spans.filter((span) => span.kind === "server");
      assert.equal(server?.name, "GET /shipments");
      const statements = spans.filter((span) => span.kind === "client");
      assert.ok(
        statements.some((span) => span.name === "SELECT shipments"),
        JSON.stringify(spans.map((span) => span.name)),
      );
      for (const span of statements) assert.equal(span.parent_id, server?.span_id);
    });
  });
});
