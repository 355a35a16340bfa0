// The service's own database: SQLite (embedded, better-sqlite3) or PostgreSQL (pg), behind one
// small interface. Statements are written once, with PostgreSQL's $1 placeholders; for SQLite
// they become ?s. Every change runs in a transaction that commits when its function returns and
// rolls back when it throws. With statements traced (AGORA_TRACE_STATEMENTS), each statement a
// transaction runs is a span (observe/statements.ts); the BEGIN and COMMIT it sends itself are not.
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import type pg from "pg";
import { type Observe, observer } from "../observe/statements.js";

export type Dialect = "sqlite" | "postgresql";
export type Params = readonly unknown[];
export type Row = Record<string, unknown>;

/** One open transaction. */
export interface Tx {
  readonly dialect: Dialect;
  all<T = Row>(sql: string, params?: Params): Promise<T[]>;
  /** Runs a statement; how many rows it changed. */
  run(sql: string, params?: Params): Promise<number>;
}

export interface Database {
  readonly dialect: Dialect;
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  /** A readiness check: throws when the database does not answer now. */
  check(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** Each statement a span under the one that ran it (ADR 41); off by default, as it costs. */
  readonly traceStatements?: boolean;
}

/** The database a URL of the Python services' form names (sqlite:///path, postgresql[+driver]://). */
export function openDatabase(url: string, options: DatabaseOptions = {}): Database {
  const observe = observer(options.traceStatements ?? false);
  if (url.startsWith("sqlite:///")) return new Sqlite(url.slice("sqlite:///".length), observe);
  const match = /^postgres(?:ql)?(?:\+[a-z0-9]+)?:\/\//.exec(url);
  if (match) return new Postgres(`postgresql://${url.slice(match[0].length)}`, observe);
  throw new Error(`not a database URL shipping knows: ${url.split(":")[0]}:...`);
}

/** A moment as the database returned it (a Date from pg, ISO text from SQLite). */
export function moment(value: unknown): Date | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value;
  return new Date(String(value));
}

function sqliteStatement(sql: string, params: Params): [string, unknown[]] {
  const ordered: unknown[] = [];
  const text = sql.replace(/\$(\d+)/g, (_, n: string) => {
    ordered.push(bindable(params[Number(n) - 1]));
    return "?";
  });
  return [text, ordered];
}

function bindable(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "boolean") return value ? 1 : 0;
  return value === undefined ? null : value;
}

class Sqlite implements Database {
  readonly dialect = "sqlite" as const;
  private readonly db: BetterSqlite3.Database;
  // better-sqlite3 is one synchronous connection: transactions whose work awaits take turns.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    path: string,
    private readonly observe: Observe,
  ) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new BetterSqlite3(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const turn = this.queue.then(() => this.inTransaction(work));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async inTransaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const db = this.db;
    const observe = this.observe;
    const tx: Tx = {
      dialect: "sqlite",
      all: async <R>(sql: string, params: Params = []) => {
        const [text, values] = sqliteStatement(sql, params);
        return observe("sqlite", text, () => db.prepare(text).all(...values) as R[]);
      },
      run: async (sql: string, params: Params = []) => {
        const [text, values] = sqliteStatement(sql, params);
        return observe("sqlite", text, () => {
          const statement = db.prepare(text);
          if (statement.reader) return statement.all(...values).length;
          return statement.run(...values).changes;
        });
      },
    };
    // IMMEDIATE: take the write lock at once, so two replicas' transactions wait for each other
    // (busy_timeout) instead of one failing at its first write.
    db.exec("BEGIN IMMEDIATE");
    try {
      const result = await work(tx);
      db.exec("COMMIT");
      return result;
    } catch (error) {
      if (db.inTransaction) db.exec("ROLLBACK");
      throw error;
    }
  }

  async check(): Promise<void> {
    this.db.prepare("SELECT 1").get();
  }

  async close(): Promise<void> {
    await this.queue;
    this.db.close();
  }
}

// pg is loaded by a service on PostgreSQL only: the embedded profile's process never holds it
// (3 MB of its memory, ADR 62).
const load = createRequire(import.meta.url);
let driver: typeof pg | undefined;

function postgresDriver(): typeof pg {
  if (driver === undefined) {
    driver = load("pg") as typeof pg;
    // bigint (a seq) as a JavaScript number: the outbox will not pass 2^53 rows.
    driver.types.setTypeParser(driver.types.builtins.INT8, (value) => Number(value));
  }
  return driver;
}

class Postgres implements Database {
  readonly dialect = "postgresql" as const;
  private readonly pool: pg.Pool;

  constructor(
    url: string,
    private readonly observe: Observe,
  ) {
    const { Pool } = postgresDriver();
    this.pool = new Pool({ connectionString: url, max: 5, connectionTimeoutMillis: 5000 });
    // An idle client's error (the server restarted) must not end the process.
    this.pool.on("error", () => undefined);
  }

  async transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const observe = this.observe;
    const tx: Tx = {
      dialect: "postgresql",
      all: async <R>(sql: string, params: Params = []) =>
        observe(
          "postgresql",
          sql,
          async () => (await client.query(sql, params as unknown[])).rows as R[],
        ),
      run: async (sql: string, params: Params = []) =>
        observe(
          "postgresql",
          sql,
          async () => (await client.query(sql, params as unknown[])).rowCount ?? 0,
        ),
    };
    let broken = false;
    try {
      await client.query("BEGIN");
      const result = await work(tx);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      try {
        await client.query("ROLLBACK");
      } catch {
        broken = true; // the connection is gone: do not hand it out again
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  async check(): Promise<void> {
    await this.pool.query("SELECT 1");
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
