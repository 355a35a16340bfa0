// The connection to NATS JetStream, kept alive whatever the broker does (agora/messaging/
// broker.py): start() returns at once and connecting goes on in the background, with backoff,
// for as long as it takes; the client reconnects by itself after that. Streams are made or
// updated idempotently: one per publishing service, agora.<service>.>, file storage, a
// de-duplication window of two minutes.
import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  StorageType,
} from "@nats-io/jetstream";
import { connect, type NatsConnection, nanos } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { Backoff, sleep } from "../backoff.js";
import { streamName, streamSubjects } from "./envelope.js";

export const DUPLICATE_WINDOW = 120; // seconds: the relay's retries stay inside it

export class BrokerUnavailable extends Error {
  override name = "BrokerUnavailable";
}

export class Broker {
  private nc: NatsConnection | null = null;
  private jsClient: JetStreamClient | null = null;
  private manager: JetStreamManager | null = null;
  private stopped = false;
  private running: Promise<void> | null = null;
  private readonly onConnect: (() => Promise<void>)[] = [];

  constructor(
    readonly url: string,
    private readonly name: string,
    private readonly log: Logger,
    private readonly login: { user: string; pass: string } | null = null,
  ) {}

  get connected(): boolean {
    return this.nc !== null && !this.nc.isClosed() && !this.disconnected;
  }

  private disconnected = false;

  get js(): JetStreamClient {
    if (this.jsClient === null || !this.connected)
      throw new BrokerUnavailable(`not connected to the broker at ${this.url}`);
    return this.jsClient;
  }

  get jsm(): JetStreamManager {
    if (this.manager === null || !this.connected)
      throw new BrokerUnavailable(`not connected to the broker at ${this.url}`);
    return this.manager;
  }

  /** Run `callback` after every (re)connection: streams, subscriptions. */
  whenConnected(callback: () => Promise<void>): void {
    this.onConnect.push(callback);
  }

  start(): void {
    this.running ??= this.connectForever();
  }

  async check(): Promise<void> {
    if (!this.connected || this.nc === null) throw new BrokerUnavailable("broker not connected");
    await this.nc.flush();
  }

  async ensureStream(service: string): Promise<void> {
    const config = {
      name: streamName(service),
      subjects: streamSubjects(service),
      storage: StorageType.File,
      duplicate_window: nanos(DUPLICATE_WINDOW * 1000),
    };
    try {
      await this.jsm.streams.info(config.name);
      await this.jsm.streams.update(config.name, config);
    } catch (error) {
      if (!isNotFound(error)) throw error;
      try {
        await this.jsm.streams.add(config);
      } catch {
        // another replica made it between our look and our add
        await this.jsm.streams.update(config.name, config);
      }
    }
  }

  /** Make sure another service's stream exists, leaving its settings as they are. */
  async findStream(service: string): Promise<void> {
    try {
      await this.jsm.streams.info(streamName(service));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await this.ensureStream(service).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    const nc = this.nc;
    this.nc = null;
    if (nc !== null && !nc.isClosed()) {
      await Promise.race([nc.drain(), sleep(10_000)]).catch(() => nc.close());
      if (!nc.isClosed()) await nc.close();
    }
  }

  private async connectForever(): Promise<void> {
    // The first pause 0.1 to 0.15 s, doubling up to 5 s, for as long as it takes.
    const backoff = new Backoff(0.1, 5, 0.05);
    while (!this.stopped) {
      try {
        await this.connectOnce();
        return;
      } catch (error) {
        const pause = backoff.next();
        this.log.warn(
          { url: this.url, error: String(error), pause },
          "broker unreachable, retrying",
        );
        await sleep(pause * 1000);
      }
    }
  }

  private async connectOnce(): Promise<void> {
    const nc = await connect({
      servers: this.url.replace(/^nats:\/\//, ""),
      name: this.name,
      timeout: 2000,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      // A service's user may subscribe only to its own inbox, _INBOX.<user> (ADR 25).
      ...(this.login
        ? { user: this.login.user, pass: this.login.pass, inboxPrefix: `_INBOX.${this.login.user}` }
        : {}),
    });
    if (this.stopped) {
      await nc.close();
      return;
    }
    this.nc = nc;
    this.jsClient = jetstream(nc);
    // No account lookup ($JS.API.INFO): a service's user may not make one.
    this.manager = await jetstreamManager(nc, { checkAPI: false });
    this.disconnected = false;
    this.log.info({ url: this.url }, "broker connected");
    void this.watch(nc);
    await this.runOnConnect();
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") {
        this.disconnected = true;
        this.log.warn({ url: this.url }, "broker disconnected");
      } else if (status.type === "error") {
        if (/permissions violation/i.test(status.error.message)) {
          // What this service's broker user may do is derived from the contracts: a refusal
          // means its code does something they do not say (ADR 25).
          this.log.error(
            { error: status.error.message },
            "the broker refused an operation to this user",
          );
        } else {
          this.log.debug({ error: status.error.message }, "broker error");
        }
      } else if (status.type === "reconnect") {
        this.disconnected = false;
        this.log.info({ url: this.url }, "broker reconnected");
        await this.runOnConnect();
      }
    }
  }

  private async runOnConnect(): Promise<void> {
    for (const callback of this.onConnect) {
      try {
        await callback();
      } catch (error) {
        this.log.warn({ error: String(error) }, "after-connect step failed");
      }
    }
  }
}

export function isNotFound(error: unknown): boolean {
  const text = String((error as { message?: unknown })?.message ?? error).toLowerCase();
  return text.includes("not found") || (error as { code?: unknown })?.code === 404;
}
