// Recording events in the transaction of the change they report (agora/messaging/outbox.py): the
// row goes into agora_outbox beside the change, with the trace context of the moment, and the
// relay publishes it after the commit.
import type { EventData } from "../contracts/events.js";
import { currentTraceparent } from "../observe/telemetry.js";
import type { Tx } from "../store/db.js";
import { type CloudEvent, envelope, subjectOf } from "./envelope.js";
import { type EventTypeName, validate } from "./schemas.js";

/** Publish `data` as an event of `type` about `aggregate` once `tx` commits. */
export async function record<T extends EventTypeName>(
  tx: Tx,
  source: string,
  type: T,
  data: EventData[T],
  aggregate: string,
): Promise<CloudEvent<EventData[T]>> {
  // What shipping sends must pass the schema its consumers check it against.
  validate(type, data);
  const event = envelope(type, data, source, aggregate);
  await tx.run(
    `INSERT INTO agora_outbox (id, aggregate, subject, type, payload, traceparent, status, created_at, attempts)
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, 0)`,
    [
      event.id,
      aggregate,
      subjectOf(type),
      type,
      Buffer.from(JSON.stringify(event)),
      currentTraceparent(),
      new Date(),
    ],
  );
  return event;
}
