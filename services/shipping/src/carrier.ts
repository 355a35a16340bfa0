// The simulated carrier: every `poll` seconds it moves the shipments that are due one step,
// each in its own transaction with its event (a replica's carrier and another's may look at
// once: the conditional update lets one of them move it).
import { context, SpanKind, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { sleep } from "./backoff.js";
import type { Schedule } from "./domain.js";
import { SERVICE_ATTRIBUTE, tracer } from "./observe/telemetry.js";
import { dueShipments, moveShipment } from "./shipments.js";
import type { Database } from "./store/db.js";

export class Carrier {
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly service: string,
    private readonly schedule: Schedule,
    private readonly poll: number,
    private readonly log: Logger,
    private readonly moved: () => void = () => undefined,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.moveDue();
      } catch (error) {
        this.log.warn({ error: String(error) }, "carrier could not move shipments, retrying");
      }
      await sleep(this.poll * 1000);
    }
  }

  /** Moves every shipment due now one step; how many moved. */
  async moveDue(now = new Date()): Promise<number> {
    let count = 0;
    for (const id of await dueShipments(this.db, now, 100)) {
      const span = tracer().startSpan("carrier move", {
        kind: SpanKind.INTERNAL,
        attributes: { [SERVICE_ATTRIBUTE]: this.service, "agora.subject": id },
      });
      const moved = await context.with(trace.setSpan(context.active(), span), () =>
        this.db.transaction((tx) => moveShipment(tx, this.service, id, this.schedule, now)),
      );
      span.setAttribute("agora.outcome", moved ? moved.status : "skipped");
      span.end();
      if (moved) {
        count++;
        this.log.info({ shipment_id: id, status: moved.status }, "shipment moved");
      }
    }
    if (count > 0) this.moved();
    return count;
  }
}
