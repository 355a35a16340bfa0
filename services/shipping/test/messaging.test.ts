// Shipping against a nats-server of the test's own: a confirmed order gets exactly one shipment
// that the carrier takes to delivered, each step published from the outbox with its event id as
// Nats-Msg-Id and the trace carried on; a malformed event is dead-lettered as the Python
// consumers do it; events wait in the outbox while the broker is away.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import {
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type StoredMsg,
} from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import type { Broker } from "../src/messaging/broker.js";
import { Consumers, subscribe } from "../src/messaging/consumer.js";
import { Relay } from "../src/messaging/relay.js";
import { Metrics } from "../src/observe/metrics.js";
import { bootstrap, type Service, subscriptions } from "../src/service.js";
import { createShipment } from "../src/shipments.js";
import {
  eventually,
  freePort,
  NatsServer,
  natsServerBinary,
  natsServerOrSkip,
  ORDER,
  onEachStore,
  quiet,
  settingsFor,
  startNats,
  tempDir,
} from "./support.js";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;
const CONFIRMED = "agora.orders.events.OrderConfirmed.v2";

function envelope(data: unknown, id: string = randomUUID()) {
  return {
    specversion: "1.0",
    id,
    source: "orders",
    type: "orders.OrderConfirmed.v2",
    time: new Date().toISOString(),
    subject: (data as { order_id?: string }).order_id,
    datacontenttype: "application/json",
    data,
  };
}

async function stored(
  jsm: JetStreamManager,
  stream: string,
  subject?: string,
): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const found: StoredMsg[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (msg && (subject === undefined || msg.subject === subject)) found.push(msg);
  }
  return found;
}

describe("shipping on the broker", natsServerOrSkip(), () => {
  onEachStore("orders confirmed", (store) => {
    let nats: NatsServer;
    let nc: NatsConnection;
    let jsm: JetStreamManager;
    let service: Service;

    before(async () => {
      nats = await startNats();
      nc = await connect({ servers: nats.url.replace("nats://", "") });
      jsm = await jetstreamManager(nc);
      // The orders service's stream, as orders makes it.
      await jsm.streams.add({
        name: "AGORA_ORDERS",
        subjects: ["agora.orders.>"],
        duplicate_window: 120e9,
      });
      service = await bootstrap(
        settingsFor({
          AGORA_SHIPPING_DATABASE_URL: store(),
          AGORA_NATS_URL: nats.url,
          AGORA_SHIPPING_DISPATCH_AFTER: "0.2",
          AGORA_SHIPPING_DELIVER_AFTER: "0.2",
          AGORA_SHIPPING_CARRIER_POLL: "0.05",
          AGORA_REDELIVERY_BACKOFF: "[0.05]",
          AGORA_MAX_DELIVER: "2",
        }),
        { out: quiet() },
      );
      service.start();
    });
    after(async () => {
      await service.stop();
      await nc.close();
      await nats.stop();
    });

    const publish = async (data: unknown, id?: string, msgID?: string) => {
      const event = envelope(data, id);
      const h = headers();
      h.set("traceparent", TRACEPARENT);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), {
        headers: h,
        msgID: msgID ?? event.id,
      });
      return event;
    };

    const shipmentsOf = (orderId: string) =>
      service.db.transaction((tx) =>
        tx.all<{ id: string; status: string }>(
          "SELECT id, status FROM shipments WHERE order_id = $1",
          [orderId],
        ),
      );

    test("one shipment per order, taken to delivered, each step published once", async () => {
      const order = { ...ORDER, order_id: randomUUID() };
      const first = await publish(order);
      await publish(order, first.id, `${first.id}:again`); // the same event, redelivered
      await publish(order); // another confirmation of the same order
      const [shipment] = await eventually(async () => {
        const rows = await shipmentsOf(order.order_id);
        return rows[0]?.status === "delivered" ? rows : null;
      });
      assert.equal((await shipmentsOf(order.order_id)).length, 1);
      const steps = await eventually(async () => {
        const all = await stored(jsm, "AGORA_SHIPPING");
        const mine = all.filter((m) => m.json<{ subject: string }>().subject === shipment?.id);
        return mine.length === 3 ? mine : null;
      });
      assert.deepEqual(
        steps.map((m) => m.subject),
        [
          "agora.shipping.events.ShipmentCreated.v1",
          "agora.shipping.events.ShipmentDispatched.v1",
          "agora.shipping.events.ShipmentDelivered.v1",
        ],
      );
      for (const message of steps) {
        const event = message.json<{
          id: string;
          source: string;
          type: string;
          data: { order_id: string };
        }>();
        assert.equal(message.header.get("Nats-Msg-Id"), event.id);
        assert.equal(event.source, "shipping");
        assert.equal(event.data.order_id, order.order_id);
      }
      // The trace of the checkout goes on into the shipment's creation.
      const created = steps[0] as StoredMsg;
      assert.equal(created.header.get("traceparent").split("-")[1], TRACE_ID);
      const pending = await eventually(async () => {
        const response = await service.app.inject({
          url: "/internal/outbox",
          headers: { authorization: "Bearer operator-secret" },
        });
        const body = response.json() as { pending: number };
        return body.pending === 0 ? body : null;
      });
      assert.equal(pending.pending, 0);
      const spans = (
        await service.app.inject({
          url: `/internal/spans?trace_id=${TRACE_ID}`,
          headers: { authorization: "Bearer operator-secret" },
        })
      ).json().spans as { name: string; kind: string }[];
      assert.ok(spans.some((s) => s.name === `${CONFIRMED} process` && s.kind === "consumer"));
      assert.ok(
        spans.some(
          (s) =>
            s.name === "agora.shipping.events.ShipmentCreated.v1 publish" && s.kind === "producer",
        ),
      );
    });

    test("a malformed event is dead-lettered with a reason naming the field, and a fixed copy replayed is applied once", async () => {
      const order = { ...ORDER, order_id: randomUUID() };
      const bad = await publish({
        ...order,
        shipping_address: { ...order.shipping_address, country: "germany" },
      });
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
      // `agora events replay` of a fixed copy: the same event id, sent back to its subject.
      const fixed = { ...bad, data: order };
      const h = headers();
      h.set("traceparent", TRACEPARENT);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(fixed), {
        headers: h,
        msgID: `${bad.id}:replay:1`,
      });
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(fixed), {
        headers: h,
        msgID: `${bad.id}:replay:2`,
      });
      await eventually(async () => (await shipmentsOf(order.order_id)).length === 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await shipmentsOf(order.order_id)).length, 1);
    });
  });
});

describe("while the broker is away", natsServerOrSkip(), () => {
  test("the outbox holds the events, and the relay publishes them once it is back", async () => {
    const port = await freePort();
    const nats = new NatsServer(natsServerBinary() as string, port, tempDir());
    const service = await bootstrap(
      settingsFor({ AGORA_NATS_URL: nats.url, AGORA_SHIPPING_DISPATCH_AFTER: "3600" }),
      { out: quiet() },
    );
    service.start();
    try {
      const shipment = await service.db.transaction((tx) =>
        createShipment(tx, "shipping", { ...ORDER, order_id: randomUUID() }, service.settings),
      );
      assert.ok(shipment);
      await new Promise((r) => setTimeout(r, 500));
      const waiting = await service.app.inject({
        url: "/internal/outbox",
        headers: { authorization: "Bearer operator-secret" },
      });
      assert.equal(waiting.json().pending, 1);
      const ready = (await service.app.inject({ url: "/readyz" })).json();
      assert.equal(ready.status, "ready"); // the broker does not take it out of rotation
      assert.equal(ready.checks.broker.ok, false);
      await nats.start();
      await eventually(async () => {
        const response = await service.app.inject({
          url: "/internal/outbox",
          headers: { authorization: "Bearer operator-secret" },
        });
        return response.json().pending === 0;
      }, 20);
      const nc = await connect({ servers: `127.0.0.1:${port}` });
      const [created] = await stored(await jetstreamManager(nc), "AGORA_SHIPPING");
      assert.equal(created?.json<{ subject: string }>().subject, shipment.id);
      await nc.close();
    } finally {
      await service.stop();
      await nats.stop();
    }
  });
});

describe("a handler that keeps failing", natsServerOrSkip(), () => {
  test("is retried, its effect rolled back each time, and dead-lettered at max_deliver", async () => {
    const nats = await startNats();
    const service = await bootstrap(settingsFor({ AGORA_NATS_URL: nats.url }), { out: quiet() });
    const broker = service.broker as Broker;
    broker.start();
    const calls: number[] = [];
    const failing = subscribe({
      type: "orders.OrderConfirmed.v2",
      durable: "always_fails",
      handlerName: "test.alwaysFails",
      handler: async (tx, order) => {
        await createShipment(tx, "shipping", order, service.settings);
        calls.push(Date.now());
        throw new Error("the carrier's system is down");
      },
    });
    const consumers = new Consumers(
      "shipping",
      service.db,
      broker,
      [failing],
      { ackWait: 5, maxDeliver: 2, backoff: [0.05], fetchTimeout: 0.5 },
      service.log,
      new Metrics(),
    );
    const running = consumers.run();
    const nc = await connect({ servers: nats.url.replace("nats://", "") });
    try {
      const jsm = await jetstreamManager(nc);
      await eventually(async () => broker.connected);
      await jsm.streams
        .add({ name: "AGORA_ORDERS", subjects: ["agora.orders.>"] })
        .catch(() => undefined);
      const order = { ...ORDER, order_id: randomUUID() };
      const event = envelope(order);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), { msgID: event.id });
      const [letter] = await eventually(async () => {
        const letters = await stored(
          jsm,
          "AGORA_SHIPPING",
          "agora.shipping.dead.always_fails",
        ).catch(() => []);
        return letters.length ? letters : null;
      });
      assert.equal(calls.length, 2);
      assert.equal(letter?.header.get("Agora-Error"), "Error: the carrier's system is down");
      assert.equal(letter?.header.get("Agora-Delivered"), "2");
      assert.equal(letter?.header.get("Agora-Event-Id"), event.id);
      const rows = await service.db.transaction((tx) =>
        tx.all("SELECT * FROM shipments WHERE order_id = $1", [order.order_id]),
      );
      assert.deepEqual(rows, []);
    } finally {
      await consumers.stop(1);
      await running;
      await nc.close();
      await service.stop();
      await nats.stop();
    }
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

describe("as the broker user the contracts allow", natsServerOrSkip(), () => {
  test("shipping consumes, publishes and dead-letters with nothing refused", async () => {
    const nats = await startNats([
      { user: "operator", password: "operator-secret" },
      SHIPPING_USER,
    ]);
    const written: string[] = [];
    const lines = new Writable({
      write(chunk, _encoding, done) {
        written.push(String(chunk));
        done();
      },
    });
    const dir = tempDir();
    writeFileSync(join(dir, "nats.password"), "shipping-secret\n");
    const service = await bootstrap(
      settingsFor({
        AGORA_NATS_URL: nats.url,
        AGORA_NATS_USER: "shipping",
        AGORA_NATS_PASSWORD_FILE: join(dir, "nats.password"),
        AGORA_SHIPPING_DISPATCH_AFTER: "0.1",
        AGORA_SHIPPING_DELIVER_AFTER: "0.1",
        AGORA_SHIPPING_CARRIER_POLL: "0.05",
      }),
      { out: lines },
    );
    const nc = await connect({
      servers: nats.url.replace("nats://", ""),
      user: "operator",
      pass: "operator-secret",
    });
    try {
      const jsm = await jetstreamManager(nc);
      // orders' stream, made by orders (shipping's user may not make it).
      await jsm.streams.add({ name: "AGORA_ORDERS", subjects: ["agora.orders.>"] });
      service.start();
      const order = { ...ORDER, order_id: randomUUID() };
      const good = envelope(order);
      const bad = envelope({ ...order, order_id: randomUUID(), lines: [] });
      for (const event of [good, bad]) {
        await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), { msgID: event.id });
      }
      const delivered = await eventually(async () => {
        const all = await stored(jsm, "AGORA_SHIPPING").catch(() => []);
        return all.some((m) => m.subject.endsWith("ShipmentDelivered.v1")) ? all : null;
      });
      const [letter] = delivered.filter((m) => m.subject === "agora.shipping.dead.create_shipment");
      assert.match(
        letter?.header.get("Agora-Error") ?? "",
        /data\/lines must NOT have fewer than 1 items/,
      );
      assert.equal(letter?.header.get("Agora-Event-Id"), bad.id);
      assert.deepEqual(
        written.filter((line) => line.includes("refused")),
        [],
      );
    } finally {
      await nc.close();
      await service.stop();
      await nats.stop();
    }
  });
});

describe("when the broker restarts", natsServerOrSkip(), () => {
  test("shipping reconnects, consumes what came meanwhile and publishes what waited", async () => {
    const nats = await startNats();
    const service = await bootstrap(
      settingsFor({ AGORA_NATS_URL: nats.url, AGORA_SHIPPING_DISPATCH_AFTER: "3600" }),
      { out: quiet() },
    );
    service.start();
    const operator = async () => {
      const nc = await connect({ servers: nats.url.replace("nats://", "") });
      return { nc, jsm: await jetstreamManager(nc) };
    };
    try {
      let { nc, jsm } = await operator();
      await jsm.streams
        .add({ name: "AGORA_ORDERS", subjects: ["agora.orders.>"] })
        .catch(() => undefined);
      await eventually(async () => (await jsm.consumers.list("AGORA_ORDERS").next()).length > 0);
      await nc.close();
      await nats.stop();
      // While it is away: a shipment made by hand waits in the outbox.
      const waiting = await service.db.transaction((tx) =>
        createShipment(tx, "shipping", { ...ORDER, order_id: randomUUID() }, service.settings),
      );
      await new Promise((r) => setTimeout(r, 1000));
      await nats.start();
      ({ nc, jsm } = await operator());
      const order = { ...ORDER, order_id: randomUUID() };
      const event = envelope(order);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), { msgID: event.id });
      const created = await eventually(
        async () => {
          const all = await stored(jsm, "AGORA_SHIPPING").catch(() => []);
          const subjects = all.map((m) => m.json<{ data: { order_id: string } }>().data.order_id);
          return subjects.includes(order.order_id) && subjects.includes(waiting?.orderId ?? "")
            ? all
            : null;
        },
        30,
        "both shipments published",
      );
      assert.equal(created.length, 2);
      await nc.close();
    } finally {
      await service.stop();
      await nats.stop();
    }
  });
});

describe("a process that dies between two steps", natsServerOrSkip(), () => {
  test("a relay dying between the ack and the mark publishes the row again, and the broker drops the copy", async () => {
    const nats = await startNats();
    const service = await bootstrap(settingsFor({ AGORA_NATS_URL: nats.url }), { out: quiet() });
    const broker = service.broker as Broker;
    broker.whenConnected(() => broker.ensureStream("shipping"));
    broker.start();
    const metrics = new Metrics();
    let dies = true;
    const relay = new Relay(service.db, broker, "shipping", service.log, metrics, {
      afterPublish: async () => {
        if (dies) {
          dies = false;
          throw new Error("killed between the ack and the mark");
        }
      },
    });
    const nc = await connect({ servers: nats.url.replace("nats://", "") });
    try {
      await eventually(
        async () => broker.connected && (await jetstreamManager(nc)).streams.info("AGORA_SHIPPING"),
      );
      await service.db.transaction((tx) =>
        createShipment(tx, "shipping", { ...ORDER, order_id: randomUUID() }, service.settings),
      );
      await assert.rejects(relay.publishPending(), /killed between the ack and the mark/);
      assert.equal(await relay.publishPending(), 1);
      assert.equal(await relay.publishPending(), 0);
      const published = await stored(await jetstreamManager(nc), "AGORA_SHIPPING");
      assert.equal(published.length, 1);
      const counted = await metrics.published.get();
      assert.deepEqual(Object.fromEntries(counted.values.map((v) => [v.labels.outcome, v.value])), {
        published: 1,
        duplicate: 1,
      });
    } finally {
      await nc.close();
      await service.stop();
      await nats.stop();
    }
  });

  test("a consumer dying between the commit and the ack skips the redelivered message through its inbox", async () => {
    const nats = await startNats();
    const service = await bootstrap(settingsFor({ AGORA_NATS_URL: nats.url }), { out: quiet() });
    const broker = service.broker as Broker;
    broker.start();
    const metrics = new Metrics();
    let dies = true;
    const consumers = new Consumers(
      "shipping",
      service.db,
      broker,
      subscriptions(service.settings, () => undefined),
      {
        ackWait: 5,
        maxDeliver: 5,
        backoff: [0.05],
        afterCommit: async () => {
          if (dies) {
            dies = false;
            throw new Error("killed between the commit and the ack");
          }
        },
      },
      service.log,
      metrics,
    );
    const running = consumers.run();
    const nc = await connect({ servers: nats.url.replace("nats://", "") });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams
        .add({ name: "AGORA_ORDERS", subjects: ["agora.orders.>"] })
        .catch(() => undefined);
      const order = { ...ORDER, order_id: randomUUID() };
      const event = envelope(order);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), { msgID: event.id });
      const outcomes = await eventually(async () => {
        const counted = await metrics.consumed.get();
        const found = Object.fromEntries(counted.values.map((v) => [v.labels.outcome, v.value]));
        return found.duplicate ? found : null;
      });
      assert.deepEqual(outcomes, { failed: 1, duplicate: 1 });
      const rows = await service.db.transaction((tx) =>
        tx.all("SELECT id FROM shipments WHERE order_id = $1", [order.order_id]),
      );
      assert.equal(rows.length, 1);
    } finally {
      await consumers.stop(1);
      await running;
      await nc.close();
      await service.stop();
      await nats.stop();
    }
  });
});
