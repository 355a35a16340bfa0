// What shipping's tests share: settings for a store of their own, access tokens signed by a key
// set the test serves, a PostgreSQL database made and dropped per test file, and a nats-server
// of the test's own on a free port (never the shared broker's streams).
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe } from "node:test";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import pg from "pg";
import type { OrderConfirmedV2 } from "../src/contracts/events.js";
import { readSettings, type Settings } from "../src/settings.js";

export const ROOT = resolve(import.meta.dirname, "../.."); // services/shipping (tests run from dist/test)
export const REPO = resolve(ROOT, "../..");
export const CI = process.env.CI === "true";

const made: string[] = [];
// Removed when the test process ends (an after() called inside a hook would run at its end).
process.on("exit", () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "shipping-test-"));
  made.push(dir);
  return dir;
}

/** Settings as the runner would give them, for `databaseUrl` (a SQLite file when empty). */
export function settingsFor(env: Record<string, string> = {}): Settings {
  const dir = tempDir();
  return readSettings({
    AGORA_DATA_DIR: join(dir, "data"),
    AGORA_OPERATOR_TOKEN: "operator-secret",
    AGORA_LOG_LEVEL: "warn",
    AGORA_STOP_DRAIN: "0",
    ...env,
  });
}

/** A sink for a service's log lines in tests. */
export const quiet = () =>
  new Writable({
    write(_chunk, _encoding, done) {
      done();
    },
  });

// --- tokens -------------------------------------------------------------------------------------

export interface Issuer {
  readonly jwks: () => Promise<{ keys: JWK[] }>;
  token(
    sub: string,
    options?: {
      roles?: string[];
      issuer?: string;
      audience?: string;
      typ?: string;
      expiresIn?: string;
    },
  ): Promise<string>;
}

export async function issuer(): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "EdDSA", use: "sig" };
  return {
    jwks: async () => ({ keys: [jwk] }),
    token: (sub, options = {}) =>
      new SignJWT({ roles: options.roles ?? [], email: `${sub}@example.com` })
        .setProtectedHeader({ alg: "EdDSA", kid: "test-key", typ: options.typ ?? "at+jwt" })
        .setSubject(sub)
        .setIssuer(options.issuer ?? "agora-identity")
        .setAudience(options.audience ?? "agora")
        .setIssuedAt()
        .setExpirationTime(options.expiresIn ?? "5m")
        .sign(privateKey),
  };
}

// --- stores -------------------------------------------------------------------------------------

const PG_ADMIN =
  process.env.SHIPPING_TEST_POSTGRES ?? "postgresql://postgres@127.0.0.1:5432/postgres";

async function postgresReachable(): Promise<string | null> {
  const client = new pg.Client({ connectionString: PG_ADMIN, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.end();
    return null;
  } catch (error) {
    return `PostgreSQL is not reachable at ${PG_ADMIN}: ${(error as Error).message}`;
  }
}

/** A database of this test file's own on the shared PostgreSQL, dropped afterwards. */
async function onAdmin(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

/** A database of this suite's own on the shared PostgreSQL, and how to drop it. */
async function createDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `shipping_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  await onAdmin(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => onAdmin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

export interface Store {
  readonly name: "sqlite" | "postgresql";
  /** The database URL for this store (called inside `before`). */
  url(): Promise<string>;
}

// Asked once, when the test files load: a suite's tests must be declared synchronously.
const postgresUnreachable = await postgresReachable();

/** Why the PostgreSQL suites skip (false: they run). Under CI=true they never skip. */
export const postgresSkip: string | false =
  postgresUnreachable !== null && !CI
    ? `${postgresUnreachable}; CI=true makes this a failure`
    : false;

/** Runs `suite` once on SQLite and once on PostgreSQL under a database of its own (skipped,
 * saying why, when PostgreSQL is unreachable, except under CI=true, where it must run). */
export function onEachStore(title: string, suite: (store: () => string) => void): void {
  describe(`${title} (sqlite)`, () => {
    let url = "";
    before(() => {
      url = `sqlite:///${join(tempDir(), "shipping.db")}`;
    });
    suite(() => url);
  });
  describe(`${title} (postgresql)`, { skip: postgresSkip }, () => {
    let url = "";
    let drop: () => Promise<void> = async () => {};
    before(async () => {
      ({ url, drop } = await createDatabase());
    });
    suite(() => url);
    // Registered after the suite's own after hooks (which close its connections): runs last.
    after(() => drop());
  });
}

// --- broker -------------------------------------------------------------------------------------

export function natsServerBinary(): string | null {
  const candidates = [process.env.NATS_SERVER, join(REPO, ".venv/bin/nats-server")];
  return candidates.find((path): path is string => !!path && existsSync(path)) ?? null;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address
          ? resolvePort(address.port)
          : reject(new Error("no port")),
      );
    });
  });
}

export class NatsServer {
  private process: ChildProcess | null = null;

  constructor(
    readonly binary: string,
    readonly port: number,
    readonly storeDir: string,
    private readonly config: string | null = null,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const config = this.config ? ["-c", this.config] : [];
    this.process = spawn(
      this.binary,
      [
        ...config,
        "--jetstream",
        "--addr",
        "127.0.0.1",
        "--port",
        String(this.port),
        "--store_dir",
        this.storeDir,
      ],
      { stdio: "ignore" },
    );
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (await this.greets()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`nats-server did not start on ${this.port}`);
  }

  /** Whether the server answers a connection with its INFO line (no login needed for that). */
  private greets(): Promise<boolean> {
    return new Promise((resolveGreeting) => {
      const socket = netConnect(this.port, "127.0.0.1");
      const done = (ok: boolean) => {
        socket.destroy();
        resolveGreeting(ok);
      };
      socket.setTimeout(500, () => done(false));
      socket.once("data", (data) => done(data.toString().startsWith("INFO")));
      socket.once("error", () => done(false));
    });
  }

  /** SIGTERM: the server says goodbye to its clients; SIGKILL: it is gone without a word. */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }
}

/** A nats-server of this test file's own, started before and stopped after its tests; null
 * (with the suite skipped) when there is no binary and CI is not set. */
export function natsServerOrSkip(): { skip: string | false } {
  if (natsServerBinary() !== null) return { skip: false };
  const reason = "no nats-server binary (run `make sync`, or set NATS_SERVER)";
  if (CI) throw new Error(reason);
  return { skip: reason };
}

/** A nats-server of the test's own; `users` as nats-server's authorization.users, if any. */
export async function startNats(users?: readonly Record<string, unknown>[]): Promise<NatsServer> {
  let config: string | null = null;
  if (users) {
    config = join(tempDir(), "nats.conf");
    // JSON is nats-server's configuration format too (agora_tools.embedded_nats.render_config).
    writeFileSync(config, `authorization: ${JSON.stringify({ users }, null, 2)}\n`);
  }
  const server = new NatsServer(natsServerBinary() as string, await freePort(), tempDir(), config);
  await server.start();
  return server;
}

/** Polls `probe` until it returns something truthy, or fails after `seconds`. */
export async function eventually<T>(
  probe: () => Promise<T | null | undefined | false>,
  seconds = 10,
  what = "the condition",
): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A confirmed order as orders publishes it (OrderConfirmed v2), going to Germany. */
export const ORDER: OrderConfirmedV2 = {
  order_id: "7d5c2f0e-8a51-4a8e-9a43-0d9f3f5f2b11",
  user_id: "b1c2d3e4-0000-4000-8000-000000000001",
  lines: [{ sku: "TEA-1", name: "Tea", quantity: 2, unit_price: 450 }],
  total: 900,
  currency: "EUR",
  shipping_address: {
    name: "Ada",
    line1: "1 Main St",
    city: "Berlin",
    postal_code: "10115",
    country: "DE",
  },
};
