// Typed settings, read from the environment once, in main's bootstrap: the names and defaults of
// the Python services' ServiceSettings (libs/agora/src/agora/settings.py). What the system shares
// is un-prefixed AGORA_*; what is shipping's own is AGORA_SHIPPING_*.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

export const SERVICE = "shipping";
export const PREFIX = "AGORA_SHIPPING_";

export type Profile = "embedded" | "production";

export interface Settings {
  readonly service: string;
  readonly host: string;
  readonly port: number;
  readonly databaseUrl: string;
  readonly profile: Profile;
  readonly dataDir: string;
  readonly replica: number;
  readonly version: string;
  readonly logLevel: string;
  readonly serviceUrls: Readonly<Record<string, readonly string[]>>;
  readonly jwtIssuer: string;
  readonly jwtAudience: string;
  readonly clientTimeout: number;
  /** The operator's token (opens /internal/*); null closes it to everyone. */
  readonly operatorToken: string | null;
  /** This process's own secret, for calls it makes on nobody's behalf (it makes none yet). */
  readonly serviceToken: string | null;
  /** The services that may call it with their own credential: name -> SHA-256 hex of its secret. */
  readonly serviceCallers: Readonly<Record<string, string>>;
  readonly natsUrl: string;
  readonly natsUser: string;
  readonly natsPassword: string;
  readonly ackWait: number;
  readonly maxDeliver: number;
  readonly redeliveryBackoff: readonly number[];
  readonly relayBatch: number;
  /** After a relay pass of relayLingerAfter rows or more, seconds before the next (ADR 60). */
  readonly relayLinger: number;
  readonly relayLingerAfter: number;
  readonly stopTimeout: number;
  readonly stopDrain: number;
  /** Seconds from a label to the carrier's collection, and from that to delivery. */
  readonly dispatchAfter: number;
  readonly deliverAfter: number;
  /** Seconds between the carrier's looks for shipments due to move. */
  readonly carrierPoll: number;
  /** Each SQL statement a span under the message or request that ran it (ADR 41): off, it costs. */
  readonly traceStatements: boolean;
}

export class InvalidSettings extends Error {
  override name = "InvalidSettings";
}

type Env = Readonly<Record<string, string | undefined>>;

/** A secret given in a file: its text stripped, or null when the file is missing. */
export function readSecret(path: string): string | null {
  try {
    const text = readFileSync(path, "utf8").trim();
    return text === "" ? null : text;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

class Reader {
  constructor(private readonly env: Env) {}

  /** An own setting (AGORA_SHIPPING_<NAME>) or a shared one (AGORA_<NAME>). */
  raw(name: string, own: boolean): string | undefined {
    return this.env[own ? `${PREFIX}${name}` : `AGORA_${name}`];
  }

  text(name: string, fallback: string, own = false): string {
    return this.raw(name, own) ?? fallback;
  }

  number(name: string, fallback: number, check: (n: number) => boolean, own = false): number {
    const raw = this.raw(name, own);
    if (raw === undefined || raw === "") return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || !check(value)) {
      throw new InvalidSettings(`${own ? PREFIX : "AGORA_"}${name}=${raw} is out of range`);
    }
    return value;
  }

  /** A yes or no as pydantic reads one (true/false, 1/0, yes/no, on/off, t/f, y/n); empty is no. */
  flag(name: string, fallback: boolean): boolean {
    const raw = this.raw(name, false)?.trim().toLowerCase();
    if (raw === undefined) return fallback;
    if (["", "0", "off", "f", "false", "n", "no"].includes(raw)) return false;
    if (["1", "on", "t", "true", "y", "yes"].includes(raw)) return true;
    throw new InvalidSettings(`AGORA_${name}=${raw} is neither on nor off`);
  }

  json<T>(name: string, fallback: T, valid: (value: unknown) => value is T): T {
    const raw = this.raw(name, false);
    if (raw === undefined || raw === "") return fallback;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      throw new InvalidSettings(`AGORA_${name} is not JSON`);
    }
    if (!valid(value)) throw new InvalidSettings(`AGORA_${name} has the wrong shape`);
    return value;
  }
}

const isUrls = (value: unknown): value is Record<string, string[]> =>
  typeof value === "object" &&
  value !== null &&
  !Array.isArray(value) &&
  Object.values(value).every(
    (urls) => Array.isArray(urls) && urls.every((u) => typeof u === "string"),
  );

const isDigests = (value: unknown): value is Record<string, string> =>
  typeof value === "object" &&
  value !== null &&
  !Array.isArray(value) &&
  Object.values(value).every((digest) => typeof digest === "string");

const isNumbers = (value: unknown): value is number[] =>
  Array.isArray(value) && value.every((n) => typeof n === "number" && n >= 0);

const positive = (n: number) => n > 0;
const atLeastZero = (n: number) => n >= 0;

export function readSettings(env: Env = process.env): Settings {
  const read = new Reader(env);
  const profile = read.text("PROFILE", "embedded");
  if (profile !== "embedded" && profile !== "production") {
    throw new InvalidSettings(`AGORA_PROFILE=${profile} is neither embedded nor production`);
  }
  const dataDir = read.text("DATA_DIR", ".agora/data");
  const databaseUrl =
    read.text("DATABASE_URL", "", true) || `sqlite:///${join(dataDir, `${SERVICE}.db`)}`;
  return {
    service: SERVICE,
    host: read.text("HOST", "127.0.0.1", true),
    port: read.number("PORT", 8080, (n) => Number.isInteger(n) && n >= 0 && n <= 65535, true),
    databaseUrl,
    profile,
    dataDir,
    replica: read.number("REPLICA", 0, (n) => Number.isInteger(n) && n >= 0),
    version: read.text("VERSION", "0.1.0"),
    logLevel: pinoLevel(read.text("LOG_LEVEL", "info")),
    serviceUrls: read.json("SERVICE_URLS", {}, isUrls),
    jwtIssuer: read.text("JWT_ISSUER", "agora-identity"),
    jwtAudience: read.text("JWT_AUDIENCE", "agora"),
    clientTimeout: read.number("CLIENT_TIMEOUT", 5, positive),
    operatorToken: operatorToken(read, profile, dataDir),
    serviceToken: configured(
      read.text("SERVICE_TOKEN", ""),
      read.raw("SERVICE_TOKEN_FILE", false) || undefined,
    ),
    serviceCallers: Object.fromEntries(
      Object.entries(read.json("SERVICE_CALLERS", {}, isDigests)).map(([name, digest]) => [
        name,
        digest.toLowerCase(),
      ]),
    ),
    natsUrl: read.text("NATS_URL", ""),
    natsUser: read.text("NATS_USER", ""),
    natsPassword:
      configured(read.text("NATS_PASSWORD", ""), read.raw("NATS_PASSWORD_FILE", false)) ?? "",
    ackWait: read.number("ACK_WAIT", 30, positive),
    maxDeliver: read.number("MAX_DELIVER", 5, (n) => Number.isInteger(n) && n >= 1),
    redeliveryBackoff: read.json("REDELIVERY_BACKOFF", [0.5, 2, 5, 10], isNumbers),
    relayBatch: read.number(
      "RELAY_BATCH",
      500,
      (n) => Number.isInteger(n) && n >= 1 && n <= 10_000,
    ),
    relayLinger: read.number("RELAY_LINGER", 0.005, (n) => n >= 0 && n <= 1),
    relayLingerAfter: read.number(
      "RELAY_LINGER_AFTER",
      8,
      (n) => Number.isInteger(n) && n >= 1 && n <= 10_000,
    ),
    stopTimeout: read.number("STOP_TIMEOUT", 20, positive),
    stopDrain: read.number("STOP_DRAIN", 1, atLeastZero),
    dispatchAfter: read.number("DISPATCH_AFTER", 5, atLeastZero, true),
    deliverAfter: read.number("DELIVER_AFTER", 5, atLeastZero, true),
    carrierPoll: read.number("CARRIER_POLL", 1, positive, true),
    traceStatements: read.flag("TRACE_STATEMENTS", false),
  };
}

function configured(value: string, path: string | undefined): string | null {
  if (value) return value;
  return path ? readSecret(path) : null;
}

// AGORA_OPERATOR_TOKEN, else the file AGORA_OPERATOR_TOKEN_FILE names, else (embedded profile
// only) .agora/secrets/operator.token beside the data: agora.auth.operator_token.
function operatorToken(read: Reader, profile: Profile, dataDir: string): string | null {
  const file = read.raw("OPERATOR_TOKEN_FILE", false) || undefined;
  const found = configured(read.text("OPERATOR_TOKEN", ""), file);
  if (found === null && file === undefined && profile === "embedded") {
    return readSecret(join(dirname(dataDir), "secrets", "operator.token"));
  }
  return found;
}

// The level names the Python services take (the standard library's: warning, critical) in pino's
// words (warn, fatal); pino's own names pass as they are.
const PINO_LEVELS: Record<string, string> = { warning: "warn", critical: "fatal" };

export function pinoLevel(name: string): string {
  const level = name.toLowerCase();
  return PINO_LEVELS[level] ?? level;
}
