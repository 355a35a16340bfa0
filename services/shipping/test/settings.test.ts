import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { decodeCursor, encodeCursor } from "../src/http/cursor.js";
import { InvalidCursor } from "../src/http/problems.js";
import { readSettings } from "../src/settings.js";

describe("settings", () => {
  test("default as the Python services' do: a SQLite file under the data directory", () => {
    const settings = readSettings({ AGORA_DATA_DIR: "/data" });
    assert.equal(settings.databaseUrl, "sqlite:////data/shipping.db");
    assert.equal(settings.port, 8080);
    assert.equal(settings.jwtIssuer, "agora-identity");
    assert.deepEqual(settings.redeliveryBackoff, [0.5, 2, 5, 10]);
  });

  test("read shipping's own under AGORA_SHIPPING_ and what is shared un-prefixed", () => {
    const dir = mkdtempSync(join(tmpdir(), "shipping-settings-"));
    writeFileSync(join(dir, "nats.password"), "s3cret\n");
    writeFileSync(join(dir, "operator.token"), "op\n");
    const settings = readSettings({
      AGORA_SHIPPING_PORT: "8123",
      AGORA_PORT: "9999",
      AGORA_SHIPPING_DATABASE_URL: "postgresql+psycopg://u@h/db",
      AGORA_REPLICA: "2",
      AGORA_SERVICE_URLS: JSON.stringify({ identity: ["http://127.0.0.1:8101"] }),
      AGORA_NATS_USER: "shipping",
      AGORA_NATS_PASSWORD_FILE: join(dir, "nats.password"),
      AGORA_OPERATOR_TOKEN_FILE: join(dir, "operator.token"),
      AGORA_SHIPPING_DISPATCH_AFTER: "0.2",
    });
    assert.equal(settings.port, 8123);
    assert.equal(settings.databaseUrl, "postgresql+psycopg://u@h/db");
    assert.equal(settings.replica, 2);
    assert.deepEqual(settings.serviceUrls.identity, ["http://127.0.0.1:8101"]);
    assert.equal(settings.natsPassword, "s3cret");
    assert.equal(settings.operatorToken, "op");
    assert.equal(settings.dispatchAfter, 0.2);
  });

  test("take the log levels the Python services take, in pino's words", () => {
    assert.equal(readSettings({ AGORA_LOG_LEVEL: "warning" }).logLevel, "warn");
    assert.equal(readSettings({ AGORA_LOG_LEVEL: "CRITICAL" }).logLevel, "fatal");
    assert.equal(readSettings({ AGORA_LOG_LEVEL: "debug" }).logLevel, "debug");
  });

  test("refuse what is out of range", () => {
    assert.throws(() => readSettings({ AGORA_SHIPPING_PORT: "70000" }), {
      name: "InvalidSettings",
    });
    assert.throws(() => readSettings({ AGORA_SERVICE_URLS: "[1]" }), { name: "InvalidSettings" });
  });

  test("without an operator token in production, /internal is closed", () => {
    assert.equal(
      readSettings({ AGORA_PROFILE: "production", AGORA_DATA_DIR: "/nowhere" }).operatorToken,
      null,
    );
  });
});

describe("cursors", () => {
  test("give back the key they were made of", () => {
    const key = {
      createdAt: new Date("2026-12-01T10:00:00.123Z"),
      id: "7d5c2f0e-8a51-4a8e-9a43-0d9f3f5f2b11",
    };
    assert.deepEqual(decodeCursor(encodeCursor(key)), key);
  });

  test("refuse anything a listing did not hand out", () => {
    for (const token of [
      "",
      "!!",
      Buffer.from("[1,2]").toString("base64url"),
      Buffer.from('["x","y"]').toString("base64url"),
    ]) {
      assert.throws(() => decodeCursor(token), InvalidCursor);
    }
  });
});
