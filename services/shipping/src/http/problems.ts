// RFC 9457 problem details: one shape for every error a client sees (agora/errors.py).
export const PROBLEM_JSON = "application/problem+json";

/** ProductNotFound -> product-not-found */
export function slug(name: string): string {
  return name.replace(/(?<!^)(?=[A-Z])/g, "-").toLowerCase();
}

/** An error with an HTTP meaning; subclasses set status and title. */
export class Problem extends Error {
  status = 400;
  title = "Bad request";
  headers: Record<string, string> = {};
  extensions: Record<string, unknown> = {};

  constructor(readonly detail?: string) {
    super(detail);
  }

  get type(): string {
    return `/problems/${slug(this.constructor.name)}`;
  }
}

export class Unauthorized extends Problem {
  override status = 401;
  override title = "Authentication required";
  override headers = { "WWW-Authenticate": 'Bearer realm="agora"' };
}

export class InvalidToken extends Unauthorized {
  override title = "Invalid access token";
}

export class NotFound extends Problem {
  override status = 404;
  override title = "Not found";
}

export class ServiceUnavailable extends Problem {
  override status = 503;
  override title = "Service unavailable";
}

export class InvalidCursor extends Problem {
  override title = "Invalid cursor";
}

export function problemBody(
  status: number,
  title: string,
  options: { detail?: string; type?: string; instance?: string; [key: string]: unknown } = {},
): Record<string, unknown> {
  const { detail, type = "about:blank", instance, ...extensions } = options;
  const body: Record<string, unknown> = { type, title, status };
  if (detail) body.detail = detail;
  if (instance) body.instance = instance;
  for (const [key, value] of Object.entries(extensions)) {
    if (value !== undefined && value !== null) body[key] = value;
  }
  return body;
}
