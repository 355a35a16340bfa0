// Access tokens checked against identity's JWKS (agora/auth.py): EdDSA only, iss, aud, exp, iat
// and sub required, header typ at+jwt (RFC 9068), a kid the key set holds. The key set is fetched
// again when a token names a kid it does not hold, at most once per refetch interval.
// The operator's token (ADR 24) opens /internal/*: compared in constant time, as digests.
import { createHash, timingSafeEqual } from "node:crypto";
import {
  type CryptoKey,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { InvalidToken, ServiceUnavailable, Unauthorized } from "./problems.js";

export const ALGORITHMS = ["EdDSA"];
export const ACCESS_TOKEN_TYPE = "at+jwt";
export const JWKS_PATH = "/.well-known/jwks.json";

export interface Principal {
  readonly id: string;
  readonly email: string;
  readonly roles: readonly string[];
  readonly isAdmin: boolean;
}

export type JwksSource = () => Promise<{ keys?: JWK[] }>;

/** identity's key set, from the first of its replicas that answers. */
export function identityJwks(urls: readonly string[], timeoutSeconds: number): JwksSource {
  return async () => {
    let last: unknown = new Error("no identity URL is configured (AGORA_SERVICE_URLS)");
    for (const url of urls) {
      try {
        const response = await fetch(`${url}${JWKS_PATH}`, {
          signal: AbortSignal.timeout(timeoutSeconds * 1000),
        });
        if (!response.ok) throw new Error(`${url}${JWKS_PATH} answered ${response.status}`);
        return (await response.json()) as { keys?: JWK[] };
      } catch (error) {
        last = error;
      }
    }
    throw last;
  };
}

export class TokenVerifier {
  private keys = new Map<string, CryptoKey | Uint8Array>();
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private refreshing: Promise<boolean> | null = null;

  constructor(
    private readonly source: JwksSource,
    private readonly issuer: string,
    private readonly audience: string,
    private readonly refetchInterval = 1.0,
    private readonly leeway = 5,
  ) {}

  async verify(token: string): Promise<Principal> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidToken("the token is not a well-formed JWT");
    }
    if (!ALGORITHMS.includes(String(header.alg)))
      throw new InvalidToken("the token's algorithm is not accepted");
    if (typeof header.kid !== "string" || !header.kid)
      throw new InvalidToken("the token names no key id");
    if (String(header.typ ?? "").toLowerCase() !== ACCESS_TOKEN_TYPE) {
      throw new InvalidToken("the token is not an access token");
    }
    const key = await this.key(header.kid);
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, key, {
        algorithms: ALGORITHMS,
        issuer: this.issuer,
        audience: this.audience,
        clockTolerance: this.leeway,
        requiredClaims: ["exp", "iat", "iss", "aud", "sub"],
      }));
    } catch (error) {
      throw new InvalidToken(reason(error));
    }
    const roles = claims.roles ?? [];
    if (!Array.isArray(roles) || !roles.every((role) => typeof role === "string")) {
      throw new InvalidToken("the token's roles are malformed");
    }
    return {
      id: String(claims.sub),
      email: typeof claims.email === "string" ? claims.email : "",
      roles,
      isAdmin: roles.includes("admin"),
    };
  }

  private async key(kid: string): Promise<CryptoKey | Uint8Array> {
    const known = this.keys.get(kid);
    if (known !== undefined) return known;
    // A kid we do not hold is most likely a rotation not seen yet: fetch the set again, no more
    // than once per interval (made-up kids must not become a stream of fetches).
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = null;
    });
    const fetched = await this.refreshing;
    if (!fetched && this.keys.size === 0) {
      throw new ServiceUnavailable("tokens cannot be checked: the key set is unreachable");
    }
    const key = this.keys.get(kid);
    if (key === undefined) throw new InvalidToken("the token was signed by an unknown key");
    return key;
  }

  private async refresh(): Promise<boolean> {
    const wait = this.fetchedAt + this.refetchInterval * 1000 - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    this.fetchedAt = performance.now();
    let document: { keys?: JWK[] };
    try {
      document = await this.source();
    } catch {
      return false;
    }
    const keys = new Map<string, CryptoKey | Uint8Array>();
    for (const entry of document.keys ?? []) {
      if (!entry.kid) continue;
      try {
        keys.set(entry.kid, await importJWK(entry, "EdDSA"));
      } catch {
        // an unusable key: skipped
      }
    }
    this.keys = keys;
    return true;
  }
}

function reason(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "the token has expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "aud") return "the token is for another audience";
    if (error.claim === "iss") return "the token is from another issuer";
    return `the token is not valid: ${error.message}`;
  }
  if (error instanceof errors.JWSSignatureVerificationFailed)
    return "the token's signature does not verify";
  return `the token is not valid: ${error instanceof Error ? error.message : String(error)}`;
}

/** The bearer token of an Authorization header, if it has one. */
export function bearer(authorization: string | undefined): string | null {
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization ?? "");
  return match?.[1] ?? null;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

export const SERVICE_CREDENTIAL = "agora-service.";

/** A service calling on nobody's behalf, by name, as its credential proved. */
export interface ServiceCaller {
  readonly service: string;
}

/** The services that may call here with their own credential, agora-service.<name>.<secret>:
 * this side knows only the SHA-256 (hex) of each one's secret (agora.auth.ServiceCredentials). */
export class ServiceCredentials {
  constructor(private readonly callers: Readonly<Record<string, string>>) {}

  static isOne(token: string): boolean {
    return token.startsWith(SERVICE_CREDENTIAL);
  }

  /** The service whose credential `token` is, if it is one allowed to call here. */
  caller(token: string): ServiceCaller | null {
    if (!ServiceCredentials.isOne(token)) return null;
    const rest = token.slice(SERVICE_CREDENTIAL.length);
    const dot = rest.indexOf(".");
    if (dot <= 0) return null;
    const [name, secret] = [rest.slice(0, dot), rest.slice(dot + 1)];
    const expected = this.callers[name];
    if (!secret || expected === undefined) return null;
    const sent = Buffer.from(sha256(secret).toString("hex"));
    const known = Buffer.from(expected.toLowerCase());
    return sent.length === known.length && timingSafeEqual(sent, known) ? { service: name } : null;
  }
}

/** Lets through only the operator's token; without one configured, nobody. */
export class OperatorGuard {
  private readonly digest: Buffer | null;

  constructor(token: string | null) {
    this.digest = token ? sha256(token) : null;
  }

  check(authorization: string | undefined): void {
    const sent = bearer(authorization);
    if (this.digest === null) {
      throw new Unauthorized("no operator credential is configured: this is closed to everyone");
    }
    if (!sent || !timingSafeEqual(sha256(sent), this.digest)) {
      throw new Unauthorized("send the operator's token: Authorization: Bearer <token>");
    }
  }
}
