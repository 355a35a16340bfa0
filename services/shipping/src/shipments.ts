// The service's handlers: each one transaction, turning a command into a change and its event.
import type { OrderConfirmedV2 } from "./contracts/events.js";
import {
  labelFor,
  nextStep,
  type Schedule,
  type Shipment,
  ShipmentNotFound,
  type Status,
} from "./domain.js";
import { record } from "./messaging/outbox.js";
import { type Database, moment, type Row, type Tx } from "./store/db.js";

const COLUMNS =
  "id, order_id, user_id, status, carrier, service_level, tracking_number, destination_country, created_at, dispatched_at, delivered_at, next_step_at";

function shipmentOf(row: Row): Shipment {
  return {
    id: String(row.id),
    orderId: String(row.order_id),
    userId: String(row.user_id),
    status: String(row.status) as Status,
    carrier: String(row.carrier),
    serviceLevel: String(row.service_level),
    trackingNumber: String(row.tracking_number),
    destinationCountry: String(row.destination_country),
    createdAt: moment(row.created_at) as Date,
    dispatchedAt: moment(row.dispatched_at),
    deliveredAt: moment(row.delivered_at),
    nextStepAt: moment(row.next_step_at),
  };
}

const common = (s: Shipment) => ({
  shipment_id: s.id,
  order_id: s.orderId,
  user_id: s.userId,
  carrier: s.carrier,
  service_level: s.serviceLevel,
  tracking_number: s.trackingNumber,
});

/** On a confirmed order: its one shipment, labelled (null when it has one already). */
export async function createShipment(
  tx: Tx,
  source: string,
  order: OrderConfirmedV2,
  schedule: Schedule,
  now = new Date(),
): Promise<Shipment | null> {
  const shipment = labelFor(
    { orderId: order.order_id, userId: order.user_id, country: order.shipping_address.country },
    schedule,
    now,
  );
  // ON CONFLICT: a second confirmation of one order (another event id) makes no second shipment.
  const made = await tx.run(
    `INSERT INTO shipments (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (order_id) DO NOTHING`,
    [
      shipment.id,
      shipment.orderId,
      shipment.userId,
      shipment.status,
      shipment.carrier,
      shipment.serviceLevel,
      shipment.trackingNumber,
      shipment.destinationCountry,
      shipment.createdAt,
      null,
      null,
      shipment.nextStepAt,
    ],
  );
  if (made === 0) return null;
  await record(
    tx,
    source,
    "shipping.ShipmentCreated.v1",
    {
      ...common(shipment),
      destination_country: shipment.destinationCountry,
      created_at: shipment.createdAt.toISOString(),
    },
    shipment.id,
  );
  return shipment;
}

/** The ids of shipments the carrier should move by `now`, oldest due first. */
export async function dueShipments(db: Database, now: Date, limit: number): Promise<string[]> {
  const rows = await db.transaction((tx) =>
    tx.all<{ id: string }>(
      "SELECT id FROM shipments WHERE next_step_at <= $1 ORDER BY next_step_at, id LIMIT $2",
      [now, limit],
    ),
  );
  return rows.map((row) => row.id);
}

/** The carrier moves one shipment a step, if it is still due; the moved shipment, or null. */
export async function moveShipment(
  tx: Tx,
  source: string,
  id: string,
  schedule: Schedule,
  now = new Date(),
): Promise<Shipment | null> {
  const [row] = await tx.all(`SELECT ${COLUMNS} FROM shipments WHERE id = $1`, [id]);
  if (row === undefined) return null;
  const current = shipmentOf(row);
  if (current.nextStepAt === null || current.nextStepAt > now) return null;
  const moved = nextStep(current, schedule, now);
  // Conditional on the status it had: of two replicas' carriers, one moves it.
  const changed = await tx.run(
    `UPDATE shipments SET status = $1, dispatched_at = $2, delivered_at = $3, next_step_at = $4
     WHERE id = $5 AND status = $6`,
    [moved.status, moved.dispatchedAt, moved.deliveredAt, moved.nextStepAt, id, current.status],
  );
  if (changed === 0) return null;
  if (moved.status === "dispatched") {
    await record(
      tx,
      source,
      "shipping.ShipmentDispatched.v1",
      { ...common(moved), dispatched_at: (moved.dispatchedAt as Date).toISOString() },
      moved.id,
    );
  } else {
    await record(
      tx,
      source,
      "shipping.ShipmentDelivered.v1",
      { ...common(moved), delivered_at: (moved.deliveredAt as Date).toISOString() },
      moved.id,
    );
  }
  return moved;
}

export interface Viewer {
  readonly id: string;
  readonly isAdmin: boolean;
}

/** A shipment its viewer may see: theirs, or any for an admin. */
export async function getShipment(db: Database, viewer: Viewer, id: string): Promise<Shipment> {
  const rows = await db.transaction((tx) =>
    tx.all(`SELECT ${COLUMNS} FROM shipments WHERE id = $1`, [id]),
  );
  const found = rows[0] === undefined ? null : shipmentOf(rows[0]);
  // Another's shipment is as unknown as one that does not exist.
  if (found === null || (!viewer.isAdmin && found.userId !== viewer.id)) {
    throw new ShipmentNotFound(`no shipment ${id}`);
  }
  return found;
}

export interface Key {
  readonly createdAt: Date;
  readonly id: string;
}

/** A page of the shipments its viewer may see (of one order, if given), oldest first. */
export async function listShipments(
  db: Database,
  viewer: Viewer,
  options: { orderId?: string; after?: Key; limit: number },
): Promise<{ items: Shipment[]; next: Key | null }> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (clause: (n: number) => string, ...values: unknown[]) => {
    where.push(clause(params.length + 1));
    params.push(...values);
  };
  if (!viewer.isAdmin) add((n) => `user_id = $${n}`, viewer.id);
  if (options.orderId !== undefined) add((n) => `order_id = $${n}`, options.orderId);
  if (options.after !== undefined) {
    add(
      (n) => `(created_at > $${n} OR (created_at = $${n + 1} AND id > $${n + 2}))`,
      options.after.createdAt,
      options.after.createdAt,
      options.after.id,
    );
  }
  const sql = `SELECT ${COLUMNS} FROM shipments ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY created_at, id LIMIT ${options.limit + 1}`;
  const rows = await db.transaction((tx) => tx.all(sql, params));
  const items = rows.slice(0, options.limit).map(shipmentOf);
  const last = items.at(-1);
  return {
    items,
    next: rows.length > options.limit && last ? { createdAt: last.createdAt, id: last.id } : null,
  };
}
