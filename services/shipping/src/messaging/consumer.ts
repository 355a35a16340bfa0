// Consumers (agora/messaging/consumer.py): each subscription is a durable pull consumer,
// <service>__<durable>, on the publisher's stream, filtered to the subject, shared by every
// replica. A message is applied in ONE transaction that records (consumer, event id) in
// agora_inbox and runs the handler; it is acked only after that commit. A message already in
// the inbox is acked and skipped. A handler that throws is nak'ed with the backoff's delay; at
// the maxDeliver-th delivery, or at once for a message that is not a valid event (poison), the
// original bytes go to agora.<service>.dead.<durable> with the Agora-* headers `agora events
// dead` and `replay` read, and the message is terminated.
import {
  AckPolicy,
  type ConsumerCreateOptions,
  DeliverPolicy,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos, headers as natsHeaders } from "@nats-io/transport-node";
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { Backoff, sleep } from "../backoff.js";
import type { EventData } from "../contracts/events.js";
import type { Metrics } from "../observe/metrics.js";
import { messageSpan } from "../observe/telemetry.js";
import type { Database, Tx } from "../store/db.js";
import type { Broker } from "./broker.js";
import { deadLetterSubject, parseType, streamName, subjectOf } from "./envelope.js";
import { type EventTypeName, Poison, parseEvent } from "./schemas.js";

export const DEAD_LETTER_SLACK = 3;
export const HEADER_LIMIT = 1000;

/** The headers a dead letter carries besides the original message's own. */
export const DeadLetterHeaders = {
  ERROR: "Agora-Error",
  HANDLER: "Agora-Handler",
  ORIGINAL_SUBJECT: "Agora-Original-Subject",
  EVENT_ID: "Agora-Event-Id",
  CONSUMER: "Agora-Consumer",
  DELIVERED: "Agora-Delivered",
} as const;

export interface Envelope {
  readonly id: string;
  readonly source: string;
  readonly subject?: string;
  readonly type: string;
}

export interface Subscription<T extends EventTypeName = EventTypeName> {
  readonly type: T;
  /** The durable's part after <service>__ (JetStream names take no dots). */
  readonly durable: string;
  /** Named in a dead letter's Agora-Handler. */
  readonly handlerName: string;
  readonly handler: (tx: Tx, data: EventData[T], envelope: Envelope) => Promise<void>;
}

/** A subscription to one event type, among others of other types. */
export function subscribe<T extends EventTypeName>(subscription: Subscription<T>): Subscription {
  return subscription as unknown as Subscription;
}

export interface ConsumerOptions {
  ackWait: number;
  maxDeliver: number;
  backoff: readonly number[];
  fetchTimeout?: number;
  /** Runs between the commit and the ack: a test makes the consumer die exactly there. */
  afterCommit?: (msg: JsMsg) => Promise<void>;
}

export function consumerName(service: string, durable: string): string {
  return `${service}__${durable}`.replaceAll(".", "_");
}

/** A message's own headers (traceparent), without the broker's (Nats-) or a dead letter's (Agora-). */
export function ownHeaders(msg: JsMsg): Record<string, string> {
  const own: Record<string, string> = {};
  for (const key of msg.headers?.keys() ?? []) {
    if (key.startsWith("Nats-") || key.startsWith("Agora-")) continue;
    own[key] = msg.headers?.get(key) ?? "";
  }
  return own;
}

function oneLine(text: string): string {
  // A header is one line of ASCII on the wire.
  const flat = text
    .split(/\s+/)
    .filter(Boolean)
    .join(" ")
    .replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return flat.length <= HEADER_LIMIT ? flat : `${flat.slice(0, HEADER_LIMIT - 3)}...`;
}

export class Consumers {
  readonly loops: Loop[];
  stopping = false;

  constructor(
    readonly service: string,
    readonly db: Database,
    readonly broker: Broker,
    subscriptions: readonly Subscription[],
    readonly options: ConsumerOptions,
    readonly log: Logger,
    readonly metrics: Metrics,
  ) {
    this.loops = subscriptions.map((subscription) => new Loop(this, subscription));
  }

  async run(): Promise<void> {
    await Promise.all(this.loops.map((loop) => loop.run()));
  }

  /** Take no more messages; wait (at most `within` s) for those in hand. */
  async stop(within: number): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + within * 1000;
    while (this.loops.some((loop) => loop.handling) && Date.now() < deadline) await sleep(20);
  }

  redeliveryDelay(delivered: number): number | undefined {
    const backoff = this.options.backoff;
    if (backoff.length === 0) return undefined;
    return backoff[Math.min(delivered, backoff.length) - 1];
  }
}

class Loop {
  readonly name: string;
  readonly subject: string;
  readonly publisher: string;
  readonly deadSubject: string;
  handling = false;

  constructor(
    private readonly owner: Consumers,
    private readonly subscription: Subscription,
  ) {
    this.name = consumerName(owner.service, subscription.durable);
    this.subject = subjectOf(subscription.type);
    this.publisher = parseType(subscription.type).publisher;
    this.deadSubject = deadLetterSubject(owner.service, subscription.durable);
  }

  async run(): Promise<void> {
    const owner = this.owner;
    const backoff = new Backoff(0.1, 5, 0.1);
    let consumer: Awaited<ReturnType<Loop["subscribe"]>> | null = null;
    while (!owner.stopping) {
      if (!owner.broker.connected) {
        consumer = null;
        await sleep(200);
        continue;
      }
      try {
        consumer ??= await this.subscribe();
        // The client refuses a pull that expires in under a second.
        const expires = Math.max(1000, (owner.options.fetchTimeout ?? 5) * 1000);
        // bind: the client never looks the consumer up ($JS.API.CONSUMER.INFO, which this
        // service's broker user may not send). Without it, a pull in flight when the broker
        // comes back asks for that lookup after the reconnection, is refused, asks again for
        // ever, and the loop waits on it: nothing is consumed again. Bound, the client pulls
        // anew after a reconnection, and missed heartbeats end the pull with an error.
        const msg = await consumer.next({ expires, bind: true });
        backoff.reset();
        if (msg === null) continue;
        if (owner.stopping) {
          msg.nak(); // handed back at once: another replica takes it
          break;
        }
        this.handling = true;
        try {
          await this.handle(msg);
        } finally {
          this.handling = false;
        }
      } catch (error) {
        consumer = null;
        const pause = backoff.next();
        owner.log.warn(
          { consumer: this.name, error: String(error), pause },
          "consumer interrupted, resubscribing",
        );
        await sleep(pause * 1000);
      }
    }
  }

  private async subscribe() {
    const broker = this.owner.broker;
    // The publisher's stream may not exist yet (its service never ran): make it, so this
    // consumer can start first; this service's own stream holds its dead letters.
    if (this.publisher !== this.owner.service) await broker.findStream(this.publisher);
    await broker.ensureStream(this.owner.service);
    const stream = streamName(this.publisher);
    const config = {
      name: this.name,
      durable_name: this.name,
      filter_subject: this.subject,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.owner.options.ackWait * 1000),
      max_deliver: this.owner.options.maxDeliver + DEAD_LETTER_SLACK,
      deliver_policy: DeliverPolicy.All,
    };
    // Creates the durable or updates its settings (AckWait, MaxDeliver) to this process's, as
    // nats-py's add_consumer does: the action "" is create-or-update. Every replica sends the same.
    const info = await broker.jsm.consumers.add(stream, config, {
      action: "",
    } as ConsumerCreateOptions);
    this.owner.log.info({ consumer: this.name, subject: this.subject }, "consumer subscribed");
    // Bound from what the broker answered: a lookup of the consumer is not among what the
    // service's broker user may do (agora.messaging.permissions).
    return broker.js.consumers.getConsumerFromInfo(info);
  }

  /** Apply one message and settle it with the broker: ack, nak, or dead-letter. */
  async handle(msg: JsMsg): Promise<void> {
    const owner = this.owner;
    const started = performance.now();
    const delivered = msg.info.deliveryCount;
    const span = messageSpan(
      "process",
      msg.subject,
      owner.service,
      msg.headers?.get("traceparent"),
      {
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": this.name,
        "messaging.message.delivery_count": delivered,
      },
    );
    let eventId =
      msg.headers?.get("Nats-Msg-Id") || `${msg.info.stream}:${msg.info.streamSequence}`;
    let source = "unknown";
    const outcome = await context.with(trace.setSpan(context.active(), span), async () => {
      try {
        const event = parseEvent(this.subscription.type, msg.data);
        eventId = event.id;
        source = event.source;
        span.setAttribute("messaging.message.id", eventId);
        span.setAttribute("agora.event_type", event.type);
        if (event.subject !== undefined) span.setAttribute("agora.subject", event.subject);
        const applied = await owner.db.transaction(async (tx) => {
          // ON CONFLICT DO NOTHING: a replica applying the same event at once waits for the
          // other's commit and then finds it.
          const recorded = await tx.run(
            "INSERT INTO agora_inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [this.name, eventId, new Date()],
          );
          if (recorded === 0) return false;
          await this.subscription.handler(tx, event.data, event);
          return true;
        });
        await owner.options.afterCommit?.(msg);
        msg.ack();
        return applied ? "handled" : "duplicate";
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).name });
        return this.failed(msg, eventId, delivered, error as Error);
      }
    });
    span.setAttribute("agora.outcome", outcome);
    span.end();
    owner.metrics.consumed.labels(owner.service, this.name, outcome).inc();
    if (outcome === "handled" || outcome === "dead")
      owner.metrics.received.labels(owner.service, source, "event").inc();
    owner.metrics.handling
      .labels(owner.service, this.name)
      .observe((performance.now() - started) / 1000);
  }

  private async failed(
    msg: JsMsg,
    eventId: string,
    delivered: number,
    error: Error,
  ): Promise<string> {
    const owner = this.owner;
    const poison = error instanceof Poison;
    owner.log.warn(
      {
        consumer: this.name,
        handler: this.subscription.handlerName,
        event_id: eventId,
        subject: msg.subject,
        delivered,
        max_deliver: owner.options.maxDeliver,
        error: `${error.name}: ${error.message}`,
      },
      poison ? "poison message" : "handler failed",
    );
    if (!poison && delivered < owner.options.maxDeliver) {
      const delay = owner.redeliveryDelay(delivered);
      msg.nak(delay === undefined ? undefined : delay * 1000);
      return "failed";
    }
    try {
      await this.deadLetter(msg, eventId, delivered, error);
    } catch (publishError) {
      // Not settled: the broker delivers it again (its MaxDeliver has slack) and the dead
      // letter is tried again then.
      owner.log.error(
        { consumer: this.name, event_id: eventId, error: String(publishError) },
        "could not dead-letter, will retry on redelivery",
      );
      const delay = owner.redeliveryDelay(delivered);
      msg.nak(delay === undefined ? undefined : delay * 1000);
      return "failed";
    }
    msg.term();
    return "dead";
  }

  private async deadLetter(
    msg: JsMsg,
    eventId: string,
    delivered: number,
    error: Error,
  ): Promise<void> {
    const headers = natsHeaders();
    for (const [key, value] of Object.entries(ownHeaders(msg))) headers.set(key, value);
    headers.set(DeadLetterHeaders.ERROR, oneLine(`${error.name}: ${error.message}`));
    headers.set(DeadLetterHeaders.HANDLER, this.subscription.handlerName);
    headers.set(DeadLetterHeaders.ORIGINAL_SUBJECT, msg.subject);
    headers.set(DeadLetterHeaders.EVENT_ID, eventId);
    headers.set(DeadLetterHeaders.CONSUMER, this.name);
    headers.set(DeadLetterHeaders.DELIVERED, String(delivered));
    // Keyed by the original's stream position: one delivery's dead letter published twice is
    // dropped by the broker; a replayed event that fails again makes a new one.
    const msgID = `${eventId}:dead:${this.name}:${msg.info.streamSequence}`;
    await this.owner.broker.js.publish(this.deadSubject, msg.data, { msgID, headers });
    this.owner.log.error(
      {
        consumer: this.name,
        handler: this.subscription.handlerName,
        event_id: eventId,
        subject: this.deadSubject,
        delivered,
      },
      "event dead-lettered",
    );
  }
}
