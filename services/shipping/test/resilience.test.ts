// Shipping when things go wrong, against a nats-server of the test's own: the broker away at
// start or restarting, a handler that keeps failing, a relay or a consumer killed between two
// steps. No event is lost, none is applied twice.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { subscribe } from "../src/messaging/consumer.js";
import { Relay } from "../src/messaging/relay.js";
import { Metrics } from "../src/observe/metrics.js";
import type { Service } from "../src/service.js";
import { subscriptions } from "../src/service.js";
import { createShipment } from "../src/shipments.js";
import {
  type Bench,
  confirmWhenBack,
  consuming,
  envelope,
  OPERATOR,
  onBroker,
  outcomes,
  stored,
} from "./broker.js";
import { eventually, natsServerOrSkip, ORDER } from "./support.js";

const labelled = (service: Service) =>
  service.db.transaction((tx) =>
    createShipment(tx, "shipping", { ...ORDER, order_id: randomUUID() }, service.settings),
  );

const pending = async (service: Service) =>
  (
    await service.app.inject({ url: "/internal/outbox", headers: { authorization: OPERATOR } })
  ).json().pending as number;

const orderIdsIn = async (bench: Bench) => {
  const { jsm } = await bench.operator();
  const all = await stored(jsm, "AGORA_SHIPPING").catch(() => []);
  return all.map((m) => m.json<{ data: { order_id: string } }>().data.order_id);
};

const slowCarrier = { env: { AGORA_SHIPPING_DISPATCH_AFTER: "3600" } };

describe("the broker away", natsServerOrSkip(), () => {
  test("at start: the outbox holds the events, readiness stays, and the relay publishes them once it is back", async () => {
    await onBroker(slowCarrier, async (bench) => {
      await bench.nats.stop();
      bench.service.start();
      const shipment = await labelled(bench.service);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await pending(bench.service), 1);
      const ready = (await bench.service.app.inject({ url: "/readyz" })).json();
      assert.equal(ready.status, "ready"); // the broker does not take it out of rotation
      assert.equal(ready.checks.broker.ok, false);
      await bench.nats.start();
      await eventually(async () => (await pending(bench.service)) === 0, 20);
      assert.deepEqual(await orderIdsIn(bench), [shipment?.orderId]);
    });
  });

  test("for a restart: shipping reconnects, consumes what came meanwhile and publishes what waited", async () => {
    await onBroker(slowCarrier, async (bench) => {
      bench.service.start();
      const { jsm } = await bench.operator();
      await eventually(async () => (await jsm.consumers.list("AGORA_ORDERS").next()).length > 0);
      await bench.nats.stop();
      const waiting = await labelled(bench.service);
      await new Promise((r) => setTimeout(r, 1000));
      await bench.nats.start();
      const order = await confirmWhenBack(bench);
      const published = await eventually(
        async () => {
          const ids = await orderIdsIn(bench);
          return ids.includes(order.order_id) && ids.includes(waiting?.orderId ?? "") ? ids : null;
        },
        30,
        "both shipments published",
      );
      assert.equal(published.length, 2);
    });
  });
});

describe("a handler that keeps failing", natsServerOrSkip(), () => {
  test("is retried, its effect rolled back each time, and dead-lettered at max_deliver", async () => {
    await onBroker({}, async (bench) => {
      const calls: number[] = [];
      const failing = subscribe({
        type: "orders.OrderConfirmed.v2",
        durable: "always_fails",
        handlerName: "test.alwaysFails",
        handler: async (tx, order) => {
          await createShipment(tx, "shipping", order, bench.service.settings);
          calls.push(Date.now());
          throw new Error("the carrier's system is down");
        },
      });
      const options = { ackWait: 5, maxDeliver: 2, backoff: [0.05], fetchTimeout: 0.5 };
      await consuming(bench, [failing], options, async () => {
        const order = { ...ORDER, order_id: randomUUID() };
        const event = envelope(order);
        await bench.publish(event);
        const { jsm } = await bench.operator();
        const [letter] = await eventually(async () => {
          const dead = "agora.shipping.dead.always_fails";
          const letters = await stored(jsm, "AGORA_SHIPPING", dead).catch(() => []);
          return letters.length ? letters : null;
        });
        assert.equal(calls.length, 2);
        assert.equal(letter?.header.get("Agora-Error"), "Error: the carrier's system is down");
        assert.equal(letter?.header.get("Agora-Delivered"), "2");
        assert.equal(letter?.header.get("Agora-Event-Id"), event.id);
        const rows = await bench.service.db.transaction((tx) =>
          tx.all("SELECT * FROM shipments WHERE order_id = $1", [order.order_id]),
        );
        assert.deepEqual(rows, []);
      });
    });
  });
});

describe("a process that dies between two steps", natsServerOrSkip(), () => {
  test("a relay dying between the ack and the mark publishes the row again, and the broker drops the copy", async () => {
    await onBroker({}, async (bench) => {
      const { broker, service } = bench;
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
      const { jsm } = await bench.operator();
      await eventually(async () => broker.connected && jsm.streams.info("AGORA_SHIPPING"));
      await labelled(service);
      await assert.rejects(relay.publishPending(), /killed between the ack and the mark/);
      assert.equal(await relay.publishPending(), 1);
      assert.equal(await relay.publishPending(), 0);
      assert.equal((await stored(jsm, "AGORA_SHIPPING")).length, 1);
      assert.deepEqual(await outcomes(metrics.published), { published: 1, duplicate: 1 });
    });
  });

  test("a consumer dying between the commit and the ack skips the redelivered message through its inbox", async () => {
    await onBroker({}, async (bench) => {
      let dies = true;
      const options = {
        ackWait: 5,
        maxDeliver: 5,
        backoff: [0.05],
        afterCommit: async () => {
          if (dies) {
            dies = false;
            throw new Error("killed between the commit and the ack");
          }
        },
      };
      const shipping = subscriptions(bench.service.settings, () => undefined);
      await consuming(bench, shipping, options, async (metrics) => {
        const order = { ...ORDER, order_id: randomUUID() };
        await bench.publish(envelope(order));
        const seen = await eventually(async () => {
          const found = await outcomes(metrics.consumed);
          return found.duplicate ? found : null;
        });
        assert.deepEqual(seen, { failed: 1, duplicate: 1 });
        const rows = await bench.service.db.transaction((tx) =>
          tx.all("SELECT id FROM shipments WHERE order_id = $1", [order.order_id]),
        );
        assert.equal(rows.length, 1);
      });
    });
  });
});

describe("a relay under load", natsServerOrSkip(), () => {
  test("after a pass of many rows it lingers, so the commits made meanwhile go out in one batch (ADR 60)", async () => {
    await onBroker(slowCarrier, async (bench) => {
      const { broker, service } = bench;
      broker.whenConnected(() => broker.ensureStream("shipping"));
      broker.start();
      const passes: number[][] = [];
      // Long enough that the five commits below fall inside it on the slowest machine.
      const relay = new Relay(service.db, broker, "shipping", service.log, new Metrics(), {
        linger: 5,
        lingerAfter: 3,
        afterPublish: async (seqs) => {
          passes.push([...seqs]);
        },
      });
      const { jsm } = await bench.operator();
      await eventually(async () => broker.connected && jsm.streams.info("AGORA_SHIPPING"));
      for (let n = 0; n < 3; n++) await labelled(service);
      const running = relay.run();
      relay.wake();
      await eventually(async () => passes.length >= 1, 20, "the first pass");
      for (let n = 0; n < 5; n++) {
        await new Promise((r) => setTimeout(r, 20)); // five commits spread over a tenth of a second
        await labelled(service);
        relay.wake();
      }
      await eventually(async () => passes.length >= 2, 20, "the second pass");
      relay.stop();
      await running;
      assert.deepEqual(
        passes.map((seqs) => seqs.length),
        [3, 5],
      );
      assert.equal(await pending(service), 0);
    });
  });
});
