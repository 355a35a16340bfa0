// Every package the lock file installs must run on the Node shipping runs on (Node 20 here):
// one that asks for Node 22 installs with only a warning and may fail at run time.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT } from "./support.js";

const require = createRequire(import.meta.url);
const semver = require("semver") as { satisfies(version: string, range: string): boolean };

test("every locked package runs on this Node", () => {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version?: string; engines?: { node?: string } }>;
  };
  const refusing = Object.entries(lock.packages)
    .filter(
      ([, info]) =>
        info.engines?.node && !semver.satisfies(process.versions.node, info.engines.node),
    )
    .map(([path, info]) => `${path}@${info.version} wants node ${info.engines?.node}`);
  assert.deepEqual(refusing, []);
});
