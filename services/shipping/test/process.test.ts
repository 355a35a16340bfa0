// The process contract the runner relies on: `main.js migrate` applies the migrations and
// exits 0; `main.js serve --port P --replica R` serves, and a SIGTERM ends it cleanly.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { eventually, freePort, ROOT, tempDir } from "./support.js";

const MAIN = join(ROOT, "dist/src/main.js");

function run(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

const exitOf = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));

test("migrate applies the migrations once and exits 0", async () => {
  const env = { AGORA_DATA_DIR: join(tempDir(), "data") };
  const first = run(["migrate"], env);
  let out = "";
  first.stdout?.on("data", (chunk) => {
    out += chunk;
  });
  assert.equal(await exitOf(first), 0);
  assert.deepEqual(JSON.parse(out).applied, ["0001_outbox_and_inbox", "0002_shipments"]);
  assert.equal(await exitOf(run(["migrate"], env)), 0);
});

test("serve runs one replica on its port until told to stop", async () => {
  const port = await freePort();
  const child = run(["serve", "--port", String(port), "--replica", "3"], {
    AGORA_DATA_DIR: join(tempDir(), "data"),
    AGORA_STOP_DRAIN: "0",
  });
  const exited = exitOf(child);
  const ready = await eventually(async () => {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null);
    return response?.ok ? response.json() : null;
  });
  assert.equal(ready.replica, 3);
  assert.equal(ready.service, "shipping");
  child.kill("SIGTERM");
  assert.equal(await exited, 0);
});

test("an unknown command is refused", async () => {
  assert.equal(await exitOf(run(["dance"], {})), 2);
});
