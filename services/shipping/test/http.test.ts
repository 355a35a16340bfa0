// The HTTP API on each store: owners and admins, problem details, the probes and the console's
// routes. Shipments are made as the consumer makes them: createShipment in a transaction.
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { bootstrap, type Service } from "../src/service.js";
import { createShipment } from "../src/shipments.js";
import { type Issuer, issuer, ORDER, onEachStore, quiet, settingsFor } from "./support.js";

const ADA = "b1c2d3e4-0000-4000-8000-00000000000a";
const BOB = "b1c2d3e4-0000-4000-8000-00000000000b";

onEachStore("the shipments API", (store) => {
  let service: Service;
  let tokens: Issuer;
  let ada: string;
  let bob: string;
  let admin: string;
  const orders = [randomUUID(), randomUUID(), randomUUID()];

  before(async () => {
    tokens = await issuer();
    service = await bootstrap(
      settingsFor({
        AGORA_SHIPPING_DATABASE_URL: store(),
        // notifications may read here with its own credential, agora-service.notifications.s3cret
        AGORA_SERVICE_CALLERS: JSON.stringify({
          notifications: createHash("sha256").update("s3cret").digest("hex"),
        }),
      }),
      {
        jwks: tokens.jwks,
        out: quiet(),
      },
    );
    [ada, bob, admin] = await Promise.all([
      tokens.token(ADA),
      tokens.token(BOB),
      tokens.token("root", { roles: ["admin"] }),
    ]);
    for (const [i, orderId] of orders.entries()) {
      await service.db.transaction((tx) =>
        createShipment(
          tx,
          "shipping",
          { ...ORDER, order_id: orderId, user_id: i < 2 ? ADA : BOB },
          service.settings,
        ),
      );
    }
  });
  after(() => service.stop());

  const get = (url: string, token?: string) =>
    service.app.inject({
      method: "GET",
      url,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });

  test("an owner lists their shipments, and sees one order's", async () => {
    const all = await get("/shipments", ada);
    assert.equal(all.statusCode, 200);
    assert.deepEqual(
      all.json().items.map((s: { order_id: string }) => s.order_id),
      orders.slice(0, 2),
    );
    const one = await get(`/shipments?order_id=${orders[0]}`, ada);
    const [shipment] = one.json().items;
    assert.equal(shipment.status, "label_created");
    assert.equal(shipment.carrier, "dhl");
    assert.equal(shipment.destination_country, "DE");
    assert.match(shipment.tracking_number, /^DH[0-9A-F]{16}$/);
    assert.equal(one.json().next_cursor, null);
  });

  test("pages with next_cursor", async () => {
    const first = (await get("/shipments?limit=1", ada)).json();
    assert.equal(first.items.length, 1);
    assert.notEqual(first.next_cursor, null);
    const second = (await get(`/shipments?limit=1&cursor=${first.next_cursor}`, ada)).json();
    assert.deepEqual(
      second.items.map((s: { order_id: string }) => s.order_id),
      [orders[1]],
    );
    assert.equal(second.next_cursor, null);
    const refused = await get("/shipments?cursor=bm90LWEtY3Vyc29y", ada);
    assert.equal(refused.statusCode, 400);
    assert.equal(refused.headers["content-type"], "application/problem+json");
  });

  test("a cursor of a moment that never was (30 February, 24:00) is a 400 problem", async () => {
    const cursor = (at: string) =>
      Buffer.from(JSON.stringify([at, randomUUID()])).toString("base64url");
    for (const at of [
      "2026-02-30T00:00:00Z",
      "2026-01-01T24:00:00Z",
      "2026-01-01T00:00:00+24:00",
    ]) {
      const refused = await get(`/shipments?cursor=${cursor(at)}`, ada);
      assert.equal(refused.statusCode, 400, at);
      assert.equal(refused.json().title, "Invalid cursor");
    }
    assert.equal(
      (await get(`/shipments?cursor=${cursor("2024-02-29T12:00:00+05:30")}`, ada)).statusCode,
      200,
    );
  });

  test("nobody reads another's shipment; an admin reads anyone's", async () => {
    const bobs = (await get(`/shipments?order_id=${orders[2]}`, bob)).json().items[0];
    assert.deepEqual((await get(`/shipments?order_id=${orders[2]}`, ada)).json().items, []);
    const refused = await get(`/shipments/${bobs.id}`, ada);
    assert.equal(refused.statusCode, 404);
    assert.equal(refused.json().status, 404);
    assert.equal((await get(`/shipments/${bobs.id}`, bob)).json().order_id, orders[2]);
    assert.equal((await get(`/shipments/${bobs.id}`, admin)).json().user_id, BOB);
    assert.equal((await get("/shipments", admin)).json().items.length, 3);
  });

  test("a known service reads with its own credential; an unknown one, or a wrong secret, is a 401", async () => {
    const read = await get(
      `/shipments?order_id=${orders[2]}`,
      "agora-service.notifications.s3cret",
    );
    assert.equal(read.statusCode, 200);
    assert.equal(read.json().items[0].user_id, BOB);
    for (const token of [
      "agora-service.notifications.wrong",
      "agora-service.orders.s3cret",
      "agora-service.notifications",
    ]) {
      const refused = await get("/shipments", token);
      assert.equal(refused.statusCode, 401, token);
      assert.equal(refused.headers["content-type"], "application/problem+json");
    }
  });

  test("an order id that is not a UUID is a 422 problem naming it", async () => {
    const response = await get("/shipments?order_id=not-a-uuid", ada);
    assert.equal(response.statusCode, 422);
    assert.equal(response.headers["content-type"], "application/problem+json");
    const body = response.json();
    assert.equal(body.type, "/problems/validation");
    assert.deepEqual(body.errors[0].loc, ["query", "order_id"]);
  });

  test("another method on a route is a 405 problem naming the one it takes", async () => {
    const response = await service.app.inject({ method: "DELETE", url: "/shipments/x" });
    assert.equal(response.statusCode, 405);
    assert.equal(response.headers.allow, "GET");
    assert.equal(response.json().title, "Method not allowed");
    assert.equal((await get("/nowhere")).statusCode, 404);
  });

  test("a method with a body, sent without one or with one nobody reads, is still a 405", async () => {
    // Fastify takes QUERY (a method with a body, RFC 9110's safe search); light-my-request's
    // types do not name it yet.
    const QUERY = "QUERY" as string as "GET";
    const bare = await service.app.inject({ method: QUERY, url: "/shipments" });
    const sent = await service.app.inject({
      method: "POST",
      url: "/shipments/x",
      headers: { "content-type": "application/x-nobody-reads-this" },
      payload: "?",
    });
    const nowhere = await service.app.inject({ method: QUERY, url: "/nowhere" });
    for (const response of [bare, sent]) {
      assert.equal(response.statusCode, 405);
      assert.equal(response.headers.allow, "GET");
      assert.equal(response.headers["content-type"], "application/problem+json");
    }
    assert.equal(nowhere.statusCode, 404);
  });

  test("a request line and headers past what Node reads (16 KiB) are a 431 problem", async () => {
    const address = await service.app.listen({ host: "127.0.0.1", port: 0 });
    const response = await fetch(`${address}/shipments?cursor=${"a".repeat(20_000)}`, {
      headers: { authorization: `Bearer ${ada}` },
    });
    assert.equal(response.status, 431);
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    assert.equal(((await response.json()) as { status: number }).status, 431);
  });

  test("an unknown shipment is a 404 problem", async () => {
    const response = await get(`/shipments/${randomUUID()}`, ada);
    assert.equal(response.statusCode, 404);
    assert.equal(response.json().type, "/problems/shipment-not-found");
  });

  test("no token, or a bad one, is a 401 problem", async () => {
    const none = await get("/shipments");
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers["www-authenticate"], 'Bearer realm="agora"');
    for (const token of [
      "not.a.jwt",
      await tokens.token(ADA, { audience: "elsewhere" }),
      await tokens.token(ADA, { issuer: "someone" }),
      await tokens.token(ADA, { typ: "JWT" }),
      await tokens.token(ADA, { expiresIn: "-1m" }),
      `${ada.slice(0, -4)}AAAA`,
    ]) {
      const response = await get("/shipments", token);
      assert.equal(response.statusCode, 401, token);
      assert.equal(response.json().title, "Invalid access token");
    }
  });

  test("the probes answer, and /readyz says the database is there", async () => {
    assert.deepEqual((await get("/livez")).json(), { status: "alive" });
    const ready = (await get("/readyz")).json();
    assert.equal(ready.status, "ready");
    assert.deepEqual(ready.checks.database, { ok: true });
    assert.match((await get("/metrics")).body, /agora_service_info\{service="shipping"/);
  });

  test("/internal needs the operator's token and answers as the Python services do", async () => {
    assert.equal((await get("/internal/outbox")).statusCode, 401);
    assert.equal((await get("/internal/outbox", ada)).statusCode, 401);
    const outbox = (await get("/internal/outbox", "operator-secret")).json();
    assert.equal(outbox.service, "shipping");
    assert.equal(outbox.outbox, true);
    assert.equal(outbox.pending, 3); // no broker here: the ShipmentCreated events wait
    assert.ok(outbox.oldest_pending_seconds >= 0);
    const spans = (await get("/internal/spans?limit=5", "operator-secret")).json();
    assert.deepEqual(Object.keys(spans).sort(), ["replica", "service", "spans"]);
    assert.ok(spans.spans.length > 0);
    assert.deepEqual(Object.keys(spans.spans[0]).sort(), [
      "attributes",
      "duration_ms",
      "kind",
      "name",
      "parent_id",
      "replica",
      "service",
      "span_id",
      "start",
      "status",
      "trace_id",
    ]);
    assert.equal((await get("/internal/logs?trace_id=xyz", "operator-secret")).statusCode, 422);
  });

  test("the OpenAPI document names both routes", async () => {
    const document = (await get("/openapi.json")).json();
    assert.deepEqual(Object.keys(document.paths).sort(), ["/shipments", "/shipments/{id}"]);
  });
});
