// A service in Node that keeps the process contract of ADR 39, and nothing more:
//   main.js serve --port P --replica R   answers /livez, /readyz and / until SIGTERM
//   main.js migrate                      records one run in the data folder and exits 0
// It reads the environment `agora up` gives every service, and shows what it got on /.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";

const NAME = "tinynode";
const PREFIX = `AGORA_${NAME.toUpperCase()}_`;
const [action, ...options] = process.argv.slice(2);

function option(name) {
  const at = options.indexOf(`--${name}`);
  return at === -1 ? undefined : options[at + 1];
}

function serve() {
  const port = Number(option("port") ?? process.env[`${PREFIX}PORT`]);
  const host = process.env[`${PREFIX}HOST`] ?? "127.0.0.1";
  const replica = Number(option("replica") ?? process.env.AGORA_REPLICA ?? 0);
  const server = createServer((request, response) => {
    const answer = (status, body) => {
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify(body));
    };
    if (request.url === "/livez") return answer(200, { status: "ok" });
    if (request.url === "/readyz") return answer(200, { status: "ok", checks: {} });
    if (request.url === "/") {
      return answer(200, {
        service: NAME,
        replica,
        port,
        data_dir: process.env.AGORA_DATA_DIR ?? null,
        nats_url: process.env.AGORA_NATS_URL ?? null,
        nats_user: process.env.AGORA_NATS_USER ?? null,
        service_urls: JSON.parse(process.env.AGORA_SERVICE_URLS ?? "{}"),
      });
    }
    return answer(404, { title: "Not Found", status: 404 });
  });
  server.listen(port, host);
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

function migrate() {
  appendFileSync(join(process.env.AGORA_DATA_DIR, `${NAME}-migrations.log`), "migrated\n");
}

if (action === "serve") {
  serve();
} else if (action === "migrate") {
  migrate();
} else {
  console.error(`usage: main.js serve --port P --replica R | main.js migrate (not ${action})`);
  process.exit(2);
}
