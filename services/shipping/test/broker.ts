// What the messaging tests share: a bench of a nats-server of the test's own with shipping
// bootstrapped against it, the envelopes orders would publish, and a look at a stream's messages.
import { randomUUID } from "node:crypto";
import { after, before } from "node:test";
import {
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type StoredMsg,
} from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import type { Counter } from "prom-client";
import type { Broker } from "../src/messaging/broker.js";
import { type ConsumerOptions, Consumers, type Subscription } from "../src/messaging/consumer.js";
import { Metrics } from "../src/observe/metrics.js";
import { bootstrap, type Service } from "../src/service.js";
import {
  eventually,
  type NatsServer,
  ORDER,
  onEachStore,
  quiet,
  settingsFor,
  startNats,
} from "./support.js";

export const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
export const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;
export const CONFIRMED = "agora.orders.events.OrderConfirmed.v2";
export const OPERATOR = "Bearer operator-secret";

/** An OrderConfirmed v2 as orders would publish it. */
export function envelope(data: unknown, id: string = randomUUID()) {
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

/** An order confirmed after the bench's server restarted, published again until the restarted
 * JetStream takes it (a second copy is de-duplicated); its data. */
export async function confirmWhenBack(bench: Bench): Promise<typeof ORDER> {
  const order = { ...ORDER, order_id: randomUUID() };
  const event = envelope(order);
  await eventually(() =>
    bench.publish(event).then(
      () => true,
      () => false,
    ),
  );
  return order;
}

/** The messages a stream holds (of one subject), oldest first. */
export async function stored(
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

/** A counter's values by outcome: {handled: 1, duplicate: 1}. */
export async function outcomes(counter: Counter): Promise<Record<string, number>> {
  const counted = await counter.get();
  return Object.fromEntries(counted.values.map((v) => [String(v.labels.outcome), v.value]));
}

export interface Bench {
  readonly nats: NatsServer;
  readonly service: Service;
  readonly broker: Broker;
  /** The operator's connection (the runner's, standing in for orders). */
  operator(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }>;
  /** Publish `event` on OrderConfirmed v2's subject, with the checkout's traceparent. */
  publish(event: { id: string }, msgID?: string): Promise<void>;
}

export interface BenchOptions {
  readonly env?: Record<string, string>;
  /** nats-server's authorization.users; the operator logs in as "operator" then. */
  readonly users?: readonly Record<string, unknown>[];
  readonly out?: NodeJS.WritableStream;
}

/** A nats-server of the test's own and shipping bootstrapped against it (not started), with
 * orders' stream made as orders makes it; close() stops them all. */
export async function openBench(
  options: BenchOptions = {},
): Promise<Bench & { close(): Promise<void> }> {
  const nats = await startNats(options.users);
  const service = await bootstrap(settingsFor({ AGORA_NATS_URL: nats.url, ...options.env }), {
    out: options.out ?? quiet(),
  });
  const login = options.users ? { user: "operator", pass: "operator-secret" } : {};
  const operating: { connection?: Promise<{ nc: NatsConnection; jsm: JetStreamManager }> } = {};
  // One connection, kept: it reconnects by itself when a test restarts the server.
  const operator = () => {
    operating.connection ??= (async () => {
      const nc = await connect({
        servers: nats.url.replace("nats://", ""),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 200,
        ...login,
      });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "AGORA_ORDERS", subjects: ["agora.orders.>"] });
      return { nc, jsm };
    })();
    return operating.connection;
  };
  await operator();
  return {
    nats,
    service,
    broker: service.broker as Broker,
    operator,
    async publish(event, msgID) {
      const { nc } = await operator();
      const h = headers();
      h.set("traceparent", TRACEPARENT);
      await jetstream(nc).publish(CONFIRMED, JSON.stringify(event), {
        headers: h,
        msgID: msgID ?? event.id,
      });
    },
    async close() {
      await (await operator()).nc.close();
      await service.stop();
      await nats.stop();
    },
  };
}

/** A bench for the time of `work`. */
export async function onBroker(
  options: BenchOptions,
  work: (bench: Bench) => Promise<void>,
): Promise<void> {
  const bench = await openBench(options);
  try {
    await work(bench);
  } finally {
    await bench.close();
  }
}

/** For each store, as onEachStore: shipping on a bench of its own, with `env` and the store's
 * database, started before the suite's tests and closed after them. */
export function onEachStoreStarted(
  title: string,
  env: Record<string, string>,
  suite: (bench: () => Bench, store: () => string) => void,
): void {
  onEachStore(title, (store) => {
    let bench: (Bench & { close(): Promise<void> }) | undefined;
    before(async () => {
      bench = await openBench({ env: { AGORA_SHIPPING_DATABASE_URL: store(), ...env } });
      bench.service.start();
    });
    after(() => bench?.close());
    suite(() => {
      if (bench === undefined) throw new Error("the bench opens before the suite's tests");
      return bench;
    }, store);
  });
}

/** `subscriptions` consumed on the bench's broker for the time of `work`, with their metrics. */
export async function consuming(
  bench: Bench,
  subscriptions: Subscription[],
  options: ConsumerOptions,
  work: (metrics: Metrics) => Promise<void>,
): Promise<void> {
  const metrics = new Metrics();
  bench.broker.start();
  const { service } = bench;
  const consumers = new Consumers(
    "shipping",
    service.db,
    bench.broker,
    subscriptions,
    options,
    service.log,
    metrics,
  );
  const running = consumers.run();
  try {
    await work(metrics);
  } finally {
    await consumers.stop(1);
    await running;
  }
}
