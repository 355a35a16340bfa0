import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, test } from "node:test";
import { deadLetterSubject, streamName, subjectOf } from "../src/messaging/envelope.js";
import { parseEvent, validate } from "../src/messaging/schemas.js";
import { ORDER, ROOT } from "./support.js";

describe("the generated event types", () => {
  test("are those the exported schemas give (run `npm run contracts` when this fails)", async () => {
    const { render, TARGET } = (await import(join(ROOT, "scripts/contracts.mjs"))) as {
      render: () => Promise<string>;
      TARGET: string;
    };
    assert.equal(
      await readFile(TARGET, "utf8"),
      await render(),
      "src/contracts/events.ts is stale",
    );
  });
});

describe("subjects and streams", () => {
  test("follow the chassis's scheme", () => {
    assert.equal(subjectOf("orders.OrderConfirmed.v2"), "agora.orders.events.OrderConfirmed.v2");
    assert.equal(streamName("shipping"), "AGORA_SHIPPING");
    assert.equal(
      deadLetterSubject("shipping", "create_shipment"),
      "agora.shipping.dead.create_shipment",
    );
    assert.throws(() => subjectOf("orders.orderConfirmed"));
  });
});

describe("messages are checked against their schemas", () => {
  test("a valid OrderConfirmed v2 passes", () => {
    assert.equal(validate("orders.OrderConfirmed.v2", ORDER).order_id, ORDER.order_id);
  });

  test("a failure names the failing field", () => {
    const bad = { ...ORDER, shipping_address: { ...ORDER.shipping_address, country: "germany" } };
    assert.throws(() => validate("orders.OrderConfirmed.v2", bad), {
      name: "Poison",
      message: /data\/shipping_address\/country must match pattern/,
    });
    const { lines: _, ...missing } = ORDER;
    assert.throws(() => validate("orders.OrderConfirmed.v2", missing), {
      message: /data\/lines must have required property/,
    });
  });

  test("an envelope that is not a CloudEvent is refused, naming what is wrong", () => {
    const bytes = Buffer.from(
      JSON.stringify({ id: "1", type: "orders.OrderConfirmed.v2", data: ORDER }),
    );
    assert.throws(() => parseEvent("orders.OrderConfirmed.v2", bytes), {
      message: /envelope\/source/,
    });
    assert.throws(() => parseEvent("orders.OrderConfirmed.v2", Buffer.from("{")), {
      message: /not JSON/,
    });
  });

  test("what shipping publishes is checked too", () => {
    assert.throws(() => validate("shipping.ShipmentCreated.v1", { shipment_id: "x" }), {
      name: "Poison",
    });
  });
});
