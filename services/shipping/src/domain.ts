// Shipments: plain data and the rules of their life, no framework. A shipment is made for a
// confirmed order with its label (label_created); the carrier collects it (dispatched) and hands
// it over (delivered). cancelled is a status a shipment may end in, never left.
import { randomBytes, randomUUID } from "node:crypto";

export type Status = "label_created" | "dispatched" | "delivered" | "cancelled";
export const STATUSES: readonly Status[] = [
  "label_created",
  "dispatched",
  "delivered",
  "cancelled",
];

export interface Shipment {
  readonly id: string;
  readonly orderId: string;
  readonly userId: string;
  readonly status: Status;
  readonly carrier: string;
  readonly serviceLevel: string;
  readonly trackingNumber: string;
  readonly destinationCountry: string;
  readonly createdAt: Date;
  readonly dispatchedAt: Date | null;
  readonly deliveredAt: Date | null;
  /** When the carrier moves it next; null once it moves no more. */
  readonly nextStepAt: Date | null;
}

export interface Route {
  readonly carrier: string;
  readonly serviceLevel: string;
  readonly prefix: string;
}

const EUROPE = new Set(
  "AT BE BG CH CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK".split(
    " ",
  ),
);

/** Who carries a parcel to `country`, and how fast: the destination decides. */
export function routeTo(country: string): Route {
  if (country === "GB") return { carrier: "royal-mail", serviceLevel: "tracked-48", prefix: "RM" };
  if (EUROPE.has(country)) return { carrier: "dhl", serviceLevel: "standard", prefix: "DH" };
  if (country === "US" || country === "CA")
    return { carrier: "ups", serviceLevel: "ground", prefix: "1Z" };
  return { carrier: "dhl-express", serviceLevel: "international", prefix: "DX" };
}

/** A carrier's number for a new parcel: its prefix and sixteen random hex digits. */
export function trackingNumber(route: Route): string {
  return `${route.prefix}${randomBytes(8).toString("hex").toUpperCase()}`;
}

export interface Schedule {
  /** Seconds from the label to the carrier's collection. */
  readonly dispatchAfter: number;
  /** Seconds from the collection to delivery. */
  readonly deliverAfter: number;
}

const later = (at: Date, seconds: number) => new Date(at.getTime() + seconds * 1000);

export function labelFor(
  order: { orderId: string; userId: string; country: string },
  schedule: Schedule,
  now: Date,
): Shipment {
  const route = routeTo(order.country);
  return {
    id: randomUUID(),
    orderId: order.orderId,
    userId: order.userId,
    status: "label_created",
    carrier: route.carrier,
    serviceLevel: route.serviceLevel,
    trackingNumber: trackingNumber(route),
    destinationCountry: order.country,
    createdAt: now,
    dispatchedAt: null,
    deliveredAt: null,
    nextStepAt: later(now, schedule.dispatchAfter),
  };
}

export class CannotMove extends Error {
  override name = "CannotMove";
}

/** The shipment one carrier step on: collected, or handed over. */
export function nextStep(shipment: Shipment, schedule: Schedule, now: Date): Shipment {
  switch (shipment.status) {
    case "label_created":
      return {
        ...shipment,
        status: "dispatched",
        dispatchedAt: now,
        nextStepAt: later(now, schedule.deliverAfter),
      };
    case "dispatched":
      return { ...shipment, status: "delivered", deliveredAt: now, nextStepAt: null };
    default:
      throw new CannotMove(`a ${shipment.status} shipment moves no more`);
  }
}

export class ShipmentNotFound extends Error {
  override name = "ShipmentNotFound";
}
