// Shipping's schema, one migration at a time, each applied once in its own transaction and
// recorded in shipping_migrations. The outbox and inbox are the chassis's tables
// (libs/agora/src/agora/messaging/schema.py), column for column.
import type { Database, Dialect, Tx } from "./db.js";

export interface Migration {
  readonly id: string;
  readonly statements: (dialect: Dialect) => readonly string[];
}

const types = (dialect: Dialect) =>
  dialect === "postgresql"
    ? { seq: "BIGSERIAL PRIMARY KEY", moment: "TIMESTAMP WITH TIME ZONE", bytes: "BYTEA" }
    : { seq: "INTEGER PRIMARY KEY AUTOINCREMENT", moment: "DATETIME", bytes: "BLOB" };

export const MIGRATIONS: readonly Migration[] = [
  {
    id: "0001_outbox_and_inbox",
    statements: (dialect) => {
      const t = types(dialect);
      return [
        `CREATE TABLE agora_outbox (
          seq ${t.seq},
          id VARCHAR(64) NOT NULL UNIQUE,
          aggregate VARCHAR(200) NOT NULL,
          subject VARCHAR(255) NOT NULL,
          type VARCHAR(200) NOT NULL,
          payload ${t.bytes} NOT NULL,
          traceparent VARCHAR(64),
          status VARCHAR(10) NOT NULL DEFAULT 'pending',
          created_at ${t.moment} NOT NULL,
          sent_at ${t.moment},
          attempts INTEGER NOT NULL DEFAULT 0,
          last_error TEXT
        )`,
        "CREATE INDEX ix_agora_outbox_pending ON agora_outbox (status, aggregate, seq)",
        `CREATE TABLE agora_inbox (
          consumer VARCHAR(200) NOT NULL,
          event_id VARCHAR(64) NOT NULL,
          handled_at ${t.moment} NOT NULL,
          PRIMARY KEY (consumer, event_id)
        )`,
      ];
    },
  },
  {
    id: "0002_shipments",
    statements: (dialect) => {
      const t = types(dialect);
      return [
        // One shipment per order: order_id is unique, whatever delivers the confirmation twice.
        `CREATE TABLE shipments (
          id VARCHAR(36) PRIMARY KEY,
          order_id VARCHAR(64) NOT NULL UNIQUE,
          user_id VARCHAR(64) NOT NULL,
          status VARCHAR(20) NOT NULL,
          carrier VARCHAR(50) NOT NULL,
          service_level VARCHAR(50) NOT NULL,
          tracking_number VARCHAR(64) NOT NULL UNIQUE,
          destination_country VARCHAR(2) NOT NULL,
          created_at ${t.moment} NOT NULL,
          dispatched_at ${t.moment},
          delivered_at ${t.moment},
          next_step_at ${t.moment}
        )`,
        "CREATE INDEX ix_shipments_user ON shipments (user_id, created_at, id)",
        "CREATE INDEX ix_shipments_due ON shipments (next_step_at)",
      ];
    },
  },
];

async function applied(tx: Tx): Promise<Set<string>> {
  await tx.run(
    "CREATE TABLE IF NOT EXISTS shipping_migrations (id VARCHAR(100) PRIMARY KEY, applied_at VARCHAR(40) NOT NULL)",
  );
  const rows = await tx.all<{ id: string }>("SELECT id FROM shipping_migrations");
  return new Set(rows.map((row) => row.id));
}

/** Applies what is not applied yet; the ids it applied. Replicas may run it at once. */
export async function migrate(db: Database, migrations = MIGRATIONS): Promise<string[]> {
  return db.transaction(async (tx) => {
    if (tx.dialect === "postgresql") {
      // One migrating process at a time; the others find the work done.
      await tx.all("SELECT pg_advisory_xact_lock(hashtext('shipping_migrations'))");
    }
    const done = await applied(tx);
    const ran: string[] = [];
    for (const migration of migrations) {
      if (done.has(migration.id)) continue;
      for (const statement of migration.statements(tx.dialect)) await tx.run(statement);
      await tx.run("INSERT INTO shipping_migrations (id, applied_at) VALUES ($1, $2)", [
        migration.id,
        new Date().toISOString(),
      ]);
      ran.push(migration.id);
    }
    return ran;
  });
}
