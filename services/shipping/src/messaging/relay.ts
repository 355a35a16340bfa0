// The relay (agora/messaging/relay.py): publishes the outbox to JetStream and marks a row sent
// only once the broker acknowledged it.
// * It wakes at once when a commit wrote events (wake()), and otherwise looks every idlePoll.
// * Rows are claimed by status = 'pending' in seq order; each aggregate's rows go out one after
//   another, each awaiting its ack before the next; different aggregates go out concurrently.
// * Every publish carries Nats-Msg-Id = the event id: a row published twice is dropped by the
//   stream's de-duplication window.
// * A pass that took lingerAfter rows or more says events are committed faster than passes go:
//   the relay waits `linger` seconds before its next pass, so that the next batch is fuller
//   (ADR 60). After a pass of fewer rows it does not wait.
// * While the broker is away it backs off (up to backoffMax) and tries again for as long as it
//   takes: an event is never given up on.

import { headers as natsHeaders } from "@nats-io/transport-node";
import { SpanStatusCode } from "@opentelemetry/api";
import type { Logger } from "pino";
import { Backoff, sleep } from "../backoff.js";
import type { Metrics } from "../observe/metrics.js";
import { messageSpan, traceparentOf } from "../observe/telemetry.js";
import type { Database } from "../store/db.js";
import type { Broker } from "./broker.js";

interface Pending {
  seq: number;
  id: string;
  aggregate: string;
  subject: string;
  payload: Uint8Array;
  traceparent: string | null;
  type: string;
}

export interface RelayOptions {
  batch?: number;
  idlePoll?: number;
  backoffMax?: number;
  publishTimeout?: number;
  linger?: number;
  lingerAfter?: number;
  /** Runs between the broker's acks and marking the rows sent: a test makes the relay die there. */
  afterPublish?: (seqs: number[]) => Promise<void>;
}

export class Relay {
  private wakeUp: (() => void) | null = null;
  private woken = false;
  private stopped = false;
  readonly batch: number;
  private readonly idlePoll: number;
  private readonly backoffMax: number;
  private readonly publishTimeout: number;
  private readonly linger: number;
  private readonly lingerAfter: number;

  constructor(
    private readonly db: Database,
    private readonly broker: Broker,
    private readonly service: string,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly options: RelayOptions = {},
  ) {
    this.batch = options.batch ?? 500;
    this.idlePoll = options.idlePoll ?? 1.0;
    this.backoffMax = options.backoffMax ?? 5.0;
    this.publishTimeout = options.publishTimeout ?? 5.0;
    this.linger = options.linger ?? 0.005;
    this.lingerAfter = options.lingerAfter ?? 8;
  }

  wake(): void {
    this.woken = true; // a wake while a pass runs or lingers is kept for the next
    this.wakeUp?.();
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  /** Publish until stopped. */
  async run(): Promise<void> {
    const backoff = new Backoff(0.05, this.backoffMax, 0.05);
    while (!this.stopped) {
      if (!this.woken) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.idlePoll * 1000);
          this.wakeUp = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeUp = null;
      }
      this.woken = false;
      while (!this.stopped) {
        try {
          const taken = await this.publishAll();
          backoff.reset();
          if (this.linger > 0 && taken >= this.lingerAfter) {
            // Rows come faster than passes go: let the next batch fill. The commits meanwhile
            // wake the relay, so the next pass starts as soon as this ends.
            await sleep(this.linger * 1000);
          }
          break;
        } catch (error) {
          const pause = backoff.next();
          this.log.warn({ error: String(error), pause }, "relay could not publish, retrying");
          await sleep(pause * 1000);
        }
      }
    }
  }

  /** Passes until one takes less than a full batch; how many rows they took in all. */
  private async publishAll(): Promise<number> {
    let taken = 0;
    for (;;) {
      const rows = await this.publishPending();
      taken += rows;
      if (rows < this.batch) return taken; // less than a full batch was all that waited
    }
  }

  /** The last pass of a stopping process: publish what is committed, for at most `within` s. */
  async flush(within: number): Promise<void> {
    try {
      await Promise.race([
        this.publishAll(),
        sleep(within * 1000).then(() => {
          throw new Error("out of time");
        }),
      ]);
    } catch (error) {
      this.log.warn({ error: String(error) }, "relay stopped with events unpublished");
    }
  }

  /** One round: publish up to `batch` pending rows; how many were taken. Throws when nothing at
   * all could be published (the broker is away), after marking what was acknowledged. */
  async publishPending(): Promise<number> {
    const rows = await this.db.transaction((tx) =>
      tx.all<Pending>(
        `SELECT seq, id, aggregate, subject, payload, traceparent, type FROM agora_outbox
         WHERE status = 'pending' ORDER BY seq LIMIT $1`,
        [this.batch],
      ),
    );
    if (rows.length === 0) return 0;
    const js = this.broker.js; // throws BrokerUnavailable while disconnected
    const acked: number[] = [];
    const errors: unknown[] = [];
    const groups = new Map<string, Pending[]>();
    for (const row of rows) {
      const group = groups.get(row.aggregate) ?? [];
      group.push({ ...row, seq: Number(row.seq) });
      groups.set(row.aggregate, group);
    }
    await Promise.all(
      [...groups.values()].map(async (group) => {
        for (const row of group) {
          try {
            await this.publish(js, row);
          } catch (error) {
            errors.push(error);
            return; // later rows of this aggregate wait for this one
          }
          acked.push(row.seq);
        }
      }),
    );
    if (acked.length > 0) {
      await this.options.afterPublish?.(acked);
      const at = new Date();
      await this.db.transaction(async (tx) => {
        for (const seq of acked) {
          await tx.run(
            "UPDATE agora_outbox SET status = 'sent', sent_at = $1 WHERE seq = $2 AND status = 'pending'",
            [at, seq],
          );
        }
      });
    }
    if (errors.length > 0 && acked.length === 0) throw errors[0];
    if (errors.length > 0) {
      this.log.warn(
        { failed: errors.length, published: acked.length },
        "some events not published yet",
      );
    }
    return rows.length;
  }

  private async publish(js: Broker["js"], row: Pending): Promise<void> {
    const span = messageSpan("publish", row.subject, this.service, row.traceparent, {
      "messaging.message.id": row.id,
      "agora.event_type": row.type,
      ...(row.aggregate ? { "agora.subject": row.aggregate } : {}),
    });
    try {
      const headers = natsHeaders();
      headers.set("Nats-Msg-Id", row.id);
      // The consumer's span becomes a child of this one.
      const traceparent = traceparentOf(span);
      if (traceparent) headers.set("traceparent", traceparent);
      const publish = () =>
        js.publish(row.subject, row.payload, {
          msgID: row.id,
          headers,
          timeout: this.publishTimeout * 1000,
        });
      let ack: Awaited<ReturnType<typeof publish>>;
      try {
        ack = await publish();
      } catch (error) {
        if (!/no responders|no stream/i.test(String(error))) throw error;
        // No stream takes the subject yet: make it, and the event waits there.
        await this.broker.findStream(row.subject.split(".")[1] ?? this.service);
        ack = await publish();
      }
      const outcome = ack.duplicate ? "duplicate" : "published";
      span.setAttribute("agora.outcome", outcome);
      this.metrics.published.labels(this.service, outcome).inc();
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      span.end();
    }
  }
}
