// bootstrap: the one place that names the concrete parts and wires them together, for the
// process (main.ts) and for the tests, which hand it their own settings and fakes.
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { sleep } from "./backoff.js";
import { Carrier } from "./carrier.js";
import { type AppParts, buildApp } from "./http/app.js";
import { identityJwks, type JwksSource, ServiceCredentials, TokenVerifier } from "./http/auth.js";
import { Broker } from "./messaging/broker.js";
import { Consumers, type Subscription, subscribe } from "./messaging/consumer.js";
import { Relay } from "./messaging/relay.js";
import { makeLogger, RecentLogs } from "./observe/logs.js";
import { Metrics } from "./observe/metrics.js";
import { configureTracing } from "./observe/telemetry.js";
import type { Settings } from "./settings.js";
import { createShipment } from "./shipments.js";
import { type Database, openDatabase } from "./store/db.js";
import { migrate } from "./store/migrations.js";

export interface Service {
  readonly settings: Settings;
  readonly app: FastifyInstance;
  readonly db: Database;
  readonly broker: Broker | null;
  readonly relay: Relay | null;
  readonly consumers: Consumers | null;
  readonly carrier: Carrier;
  readonly log: Logger;
  /** Starts the broker, relay, consumers and carrier (the HTTP server is the caller's). */
  start(): void;
  stop(): Promise<void>;
}

export interface Fakes {
  readonly jwks?: JwksSource;
  readonly out?: NodeJS.WritableStream;
  readonly db?: Database;
}

/** What shipping listens to: one place, at a glance. */
export function subscriptions(settings: Settings, wake: () => void): Subscription[] {
  return [
    subscribe({
      type: "orders.OrderConfirmed.v2",
      durable: "create_shipment",
      handlerName: "shipping.shipments.createShipment",
      handler: async (tx, order) => {
        const made = await createShipment(tx, settings.service, order, settings);
        if (made) queueMicrotask(wake);
      },
    }),
  ];
}

export async function bootstrap(settings: Settings, fakes: Fakes = {}): Promise<Service> {
  const spans = configureTracing(settings.service, settings.version, settings.replica);
  const logs = new RecentLogs();
  const log = makeLogger(settings.service, settings.replica, settings.logLevel, logs, fakes.out);
  const metrics = new Metrics();
  const db =
    fakes.db ?? openDatabase(settings.databaseUrl, { traceStatements: settings.traceStatements });
  await migrate(db);
  const verifier = new TokenVerifier(
    fakes.jwks ?? identityJwks(settings.serviceUrls.identity ?? [], settings.clientTimeout),
    settings.jwtIssuer,
    settings.jwtAudience,
  );
  const broker = settings.natsUrl
    ? new Broker(
        settings.natsUrl,
        `${settings.service}-${settings.replica}`,
        log,
        settings.natsUser ? { user: settings.natsUser, pass: settings.natsPassword } : null,
      )
    : null;
  const relay = broker
    ? new Relay(db, broker, settings.service, log, metrics, {
        batch: settings.relayBatch,
        linger: settings.relayLinger,
        lingerAfter: settings.relayLingerAfter,
      })
    : null;
  const wake = () => relay?.wake();
  const consumers = broker
    ? new Consumers(
        settings.service,
        db,
        broker,
        subscriptions(settings, wake),
        {
          ackWait: settings.ackWait,
          maxDeliver: settings.maxDeliver,
          backoff: settings.redeliveryBackoff,
        },
        log,
        metrics,
      )
    : null;
  const carrier = new Carrier(db, settings.service, settings, settings.carrierPoll, log, wake);
  const parts: AppParts = {
    service: settings.service,
    version: settings.version,
    replica: settings.replica,
    db,
    verifier,
    operatorToken: settings.operatorToken,
    callers: new ServiceCredentials(settings.serviceCallers),
    metrics,
    spans,
    logs,
    log,
    ...(broker ? { broker: () => broker.check() } : {}),
  };
  const { app, stopping } = await buildApp(parts);
  const running: Promise<unknown>[] = [];
  return {
    settings,
    app,
    db,
    broker,
    relay,
    consumers,
    carrier,
    log,
    start() {
      if (broker) {
        broker.whenConnected(() => broker.ensureStream(settings.service));
        broker.start();
      }
      if (relay) running.push(relay.run());
      if (consumers) running.push(consumers.run());
      running.push(carrier.run());
    },
    async stop() {
      // Out of rotation first (/readyz 503), then the work in hand, then the last events out.
      stopping();
      // Callers learn of /readyz's 503 only at their next poll: serve on until then (ADR 30).
      await sleep(settings.stopDrain * 1000);
      carrier.stop();
      await consumers?.stop(settings.stopTimeout / 2);
      relay?.stop();
      await Promise.race([
        Promise.allSettled(running),
        new Promise((r) => setTimeout(r, settings.stopTimeout * 500)),
      ]);
      if (relay && broker?.connected) await relay.flush(2);
      await app.close();
      await broker?.close();
      await db.close();
    },
  };
}
