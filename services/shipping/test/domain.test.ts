import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { labelFor, nextStep, routeTo, trackingNumber } from "../src/domain.js";

const schedule = { dispatchAfter: 10, deliverAfter: 20 };
const now = new Date("2026-12-01T10:00:00.000Z");

describe("the route a parcel takes", () => {
  test("is chosen by the destination country", () => {
    assert.deepEqual(routeTo("GB"), {
      carrier: "royal-mail",
      serviceLevel: "tracked-48",
      prefix: "RM",
    });
    assert.equal(routeTo("DE").carrier, "dhl");
    assert.equal(routeTo("FR").serviceLevel, "standard");
    assert.equal(routeTo("US").carrier, "ups");
    assert.equal(routeTo("JP").serviceLevel, "international");
  });

  test("gives each parcel a tracking number of its carrier", () => {
    const numbers = new Set(Array.from({ length: 100 }, () => trackingNumber(routeTo("GB"))));
    assert.equal(numbers.size, 100);
    for (const number of numbers) assert.match(number, /^RM[0-9A-F]{16}$/);
  });
});

describe("a shipment's life", () => {
  test("starts with its label, due for collection after the schedule's delay", () => {
    const shipment = labelFor({ orderId: "o-1", userId: "u-1", country: "DE" }, schedule, now);
    assert.equal(shipment.status, "label_created");
    assert.equal(shipment.carrier, "dhl");
    assert.equal(shipment.nextStepAt?.toISOString(), "2026-12-01T10:00:10.000Z");
  });

  test("is dispatched, then delivered, then moves no more", () => {
    const label = labelFor({ orderId: "o-1", userId: "u-1", country: "DE" }, schedule, now);
    const dispatched = nextStep(label, schedule, new Date("2026-12-01T10:00:10.000Z"));
    assert.equal(dispatched.status, "dispatched");
    assert.equal(dispatched.dispatchedAt?.toISOString(), "2026-12-01T10:00:10.000Z");
    assert.equal(dispatched.nextStepAt?.toISOString(), "2026-12-01T10:00:30.000Z");
    const delivered = nextStep(dispatched, schedule, new Date("2026-12-01T10:00:30.000Z"));
    assert.equal(delivered.status, "delivered");
    assert.equal(delivered.nextStepAt, null);
    assert.throws(() => nextStep(delivered, schedule, now), { name: "CannotMove" });
  });
});
