// The process: `main.js serve --port P --replica R` runs one replica; `main.js migrate` applies
// the migrations and exits 0. Settings come from the environment the runner gives every service.
import { parseArgs } from "node:util";
import { bootstrap } from "./service.js";
import { readSettings, type Settings } from "./settings.js";
import { openDatabase } from "./store/db.js";
import { migrate } from "./store/migrations.js";

const USAGE = "usage: main.js serve [--port P] [--replica R] | main.js migrate";

async function serve(settings: Settings): Promise<void> {
  const service = await bootstrap(settings);
  await service.app.listen({ host: settings.host, port: settings.port });
  service.start();
  service.log.info({ host: settings.host, port: settings.port }, "serving");
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    service.log.info({ signal }, "stopping");
    // A stop ends within stop_timeout, whatever is still running (ADR 30).
    setTimeout(() => process.exit(1), settings.stopTimeout * 1000).unref();
    await service.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { port: { type: "string" }, replica: { type: "string" } },
  });
  const command = positionals[0];
  const env = { ...process.env };
  if (values.port !== undefined) env.AGORA_SHIPPING_PORT = values.port;
  if (values.replica !== undefined) env.AGORA_REPLICA = values.replica;
  const settings = readSettings(env);
  if (command === "migrate") {
    const db = openDatabase(settings.databaseUrl);
    try {
      const ran = await migrate(db);
      console.log(JSON.stringify({ event: "migrated", service: settings.service, applied: ran }));
    } finally {
      await db.close();
    }
    return 0;
  }
  if (command === "serve") {
    await serve(settings);
    return -1; // keeps running
  }
  console.error(USAGE);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);
