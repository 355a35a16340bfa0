// Shipping against a nats-server of the test's own: a confirmed order gets exactly one shipment
// that the carrier takes to delivered, each step published from the outbox with its event id as
// Nats-Msg-Id and the checkout's trace carried on; a malformed event is dead-lettered as the
// Python consumers do it; all of it under exactly the broker permissions the contracts grant.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import type { StoredMsg } from "@nats-io/jetstream";
import {
  CONFIRMED,
  confirmWhenBack,
  envelope,
  OPERATOR,
  onBroker,
  onEachStoreStarted,
  stored,
  TRACE_ID,
  TRACEPARENT,
} from "./broker.js";
import { eventually, natsServerOrSkip, ORDER, tempDir } from "./support.js";

const STEPS = [
  "agora.shipping.events.ShipmentCreated.v1",
  "agora.shipping.events.ShipmentDispatched.v1",
  "agora.shipping.events.ShipmentDelivered.v1",
];

describe("shipping on the broker", natsServerOrSkip(), () => {
  const env = {
    AGORA_SHIPPING_DISPATCH_AFTER: "0.2",
    AGORA_SHIPPING_DELIVER_AFTER: "0.2",
    AGORA_SHIPPING_CARRIER_POLL: "0.05",
  };
  onEachStoreStarted("orders confirmed", env, (bench) => {
    const confirm = async (data: unknown, id?: string, msgID?: string) => {
      const event = envelope(data, id);
      await bench().publish(event, msgID);
      return event;
    };
    const shipmentsOf = (orderId: string) =>
      bench().service.db.transaction((tx) =>
        tx.all<{ id: string; status: string }>(
          "SELECT id, status FROM shipments WHERE order_id = $1",
          [orderId],
        ),
      );
    const internal = async (path: string) =>
      (
        await bench().service.app.inject({ url: path, headers: { authorization: OPERATOR } })
      ).json();

    test("one shipment per order, taken to delivered, each step published once", async () => {
      const order = { ...ORDER, order_id: randomUUID() };
      const first = await confirm(order);
      await confirm(order, first.id, `${first.id}:again`); // the same event, redelivered
      await confirm(order); // another confirmation of the same order
      const [shipment] = await eventually(async () => {
        const rows = await shipmentsOf(order.order_id);
        return rows[0]?.status === "delivered" ? rows : null;
      });
      assert.equal((await shipmentsOf(order.order_id)).length, 1);
      const { jsm } = await bench().operator();
      const steps = await eventually(async () => {
        const all = await stored(jsm, "AGORA_SHIPPING");
        const mine = all.filter((m) => m.json<{ subject: string }>().subject === shipment?.id);
        return mine.length === 3 ? mine : null;
      });
      assert.deepEqual(
        steps.map((m) => m.subject),
        STEPS,
      );
      for (const message of steps) {
        const event = message.json<{ id: string; source: string; data: { order_id: string } }>();
        assert.equal(message.header.get("Nats-Msg-Id"), event.id);
        assert.equal(event.source, "shipping");
        assert.equal(event.data.order_id, order.order_id);
      }
      // The trace of the checkout goes on into the shipment's creation.
      const created = steps[0] as StoredMsg;
      assert.equal(created.header.get("traceparent").split("-")[1], TRACE_ID);
      await eventually(async () => (await internal("/internal/outbox")).pending === 0);
      const { spans } = (await internal(`/internal/spans?trace_id=${TRACE_ID}`)) as {
        spans: { name: string; kind: string }[];
      };
      assert.ok(spans.some((s) => s.name === `${CONFIRMED} process` && s.kind === "consumer"));
      assert.ok(spans.some((s) => s.name === `${STEPS[0]} publish` && s.kind === "producer"));
    });

    test("a malformed event is dead-lettered with a reason naming the field, and a fixed copy replayed is applied once", async () => {
      const order = { ...ORDER, order_id: randomUUID() };
      const bad = await confirm({
        ...order,
        shipping_address: { ...order.shipping_address, country: "germany" },
      });
      const { jsm } = await bench().operator();
      const [letter] = await eventually(async () => {
        const letters = await stored(jsm, "AGORA_SHIPPING", "agora.shipping.dead.create_shipment");
        const mine = letters.filter((m) => m.header.get("Agora-Event-Id") === bad.id);
        return mine.length ? mine : null;
      });
      assert.ok(letter);
      assert.match(
        letter.header.get("Agora-Error"),
        /^Poison: not a valid orders\.OrderConfirmed\.v2 event: data\/shipping_address\/country must match pattern/,
      );
      assert.equal(letter.header.get("Agora-Original-Subject"), CONFIRMED);
      assert.equal(letter.header.get("Agora-Consumer"), "shipping__create_shipment");
      assert.equal(letter.header.get("Agora-Handler"), "shipping.shipments.createShipment");
      assert.equal(letter.header.get("Agora-Delivered"), "1");
      assert.equal(letter.header.get("traceparent"), TRACEPARENT);
      assert.deepEqual(letter.json(), bad);
      assert.deepEqual(await shipmentsOf(order.order_id), []);
      // `agora events replay` of a fixed copy, twice: the same event id, a new Nats-Msg-Id.
      const fixed = { ...bad, data: order };
      await bench().publish(fixed, `${bad.id}:replay:1`);
      await bench().publish(fixed, `${bad.id}:replay:2`);
      await eventually(async () => (await shipmentsOf(order.order_id)).length === 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await shipmentsOf(order.order_id)).length, 1);
    });
  });
});

// What agora.messaging.permissions.service_permissions gives shipping's broker user, from the
// contracts' traffic (it publishes its three events, consumes OrderConfirmed v2): nothing more.
const SHIPPING_USER = {
  user: "shipping",
  password: "shipping-secret",
  permissions: {
    publish: {
      allow: [
        "agora.shipping.events.ShipmentCreated.v1",
        "agora.shipping.events.ShipmentDelivered.v1",
        "agora.shipping.events.ShipmentDispatched.v1",
        "agora.shipping.dead.>",
        "$JS.API.STREAM.INFO.AGORA_SHIPPING",
        "$JS.API.STREAM.CREATE.AGORA_SHIPPING",
        "$JS.API.STREAM.UPDATE.AGORA_SHIPPING",
        "$JS.API.STREAM.INFO.AGORA_ORDERS",
        "$JS.API.CONSUMER.CREATE.AGORA_ORDERS.*.agora.orders.events.OrderConfirmed.v2",
        "$JS.API.CONSUMER.MSG.NEXT.AGORA_ORDERS.*",
        "$JS.ACK.AGORA_ORDERS.>",
      ],
    },
    subscribe: { allow: ["_INBOX.shipping.>"] },
  },
};

/** Shipping logged in to a broker that knows only the operator and shipping's user, with what it
 * logs kept in `written`. */
function asShippingUser(env: Record<string, string> = {}) {
  const written: string[] = [];
  const out = new Writable({
    write(chunk, _encoding, done) {
      written.push(String(chunk));
      done();
    },
  });
  const password = join(tempDir(), "nats.password");
  writeFileSync(password, "shipping-secret\n");
  const options = {
    users: [{ user: "operator", password: "operator-secret" }, SHIPPING_USER],
    out,
    env: { AGORA_NATS_USER: "shipping", AGORA_NATS_PASSWORD_FILE: password, ...env },
  };
  return { options, written };
}

describe("as the broker user the contracts allow", natsServerOrSkip(), () => {
  test("shipping consumes, publishes and dead-letters with nothing refused", async () => {
    const { options, written } = asShippingUser({
      AGORA_SHIPPING_DISPATCH_AFTER: "0.1",
      AGORA_SHIPPING_DELIVER_AFTER: "0.1",
      AGORA_SHIPPING_CARRIER_POLL: "0.05",
    });
    await onBroker(options, async (bench) => {
      bench.service.start();
      const order = { ...ORDER, order_id: randomUUID() };
      const good = envelope(order);
      const bad = envelope({ ...order, order_id: randomUUID(), lines: [] });
      for (const event of [good, bad]) await bench.publish(event);
      const { jsm } = await bench.operator();
      const published = await eventually(async () => {
        const all = await stored(jsm, "AGORA_SHIPPING").catch(() => []);
        return all.some((m) => m.subject === STEPS[2]) ? all : null;
      });
      const [letter] = published.filter((m) => m.subject === "agora.shipping.dead.create_shipment");
      assert.match(
        letter?.header.get("Agora-Error") ?? "",
        /data\/lines must NOT have fewer than 1 items/,
      );
      assert.equal(letter?.header.get("Agora-Event-Id"), bad.id);
      assert.deepEqual(
        written.filter((line) => line.includes("refused")),
        [],
      );
    });
  });

  test("a pull in flight when the broker restarts ends, and shipping consumes again", async () => {
    const { options, written } = asShippingUser();
    await onBroker(options, async (bench) => {
      bench.service.start();
      const { jsm } = await bench.operator();
      await eventually(async () => (await jsm.consumers.list("AGORA_ORDERS").next()).length > 0);
      // The consumer waits on its pull (5 s) while the server dies and comes back: killed, it
      // does not end the pull on its way out.
      await bench.nats.stop("SIGKILL");
      await bench.nats.start();
      const order = await confirmWhenBack(bench);
      await eventually(
        async () => {
          const created = await stored(jsm, "AGORA_SHIPPING", STEPS[0]).catch(() => []);
          return created.some(
            (m) => m.json<{ data: { order_id: string } }>().data.order_id === order.order_id,
          );
        },
        30,
        "the shipment of an order confirmed after the restart",
      );
      assert.deepEqual(
        written.filter((line) => line.includes("refused")),
        [],
      );
    });
  });
});
