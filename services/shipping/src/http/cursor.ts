// Opaque paging cursors (agora/cursor.py): the key of a page's last row as a JSON array, in
// base64url without padding. A cursor comes back from anyone: anything but a key this listing
// handed out is one InvalidCursor, a 400 problem, before it reaches a query.
import type { Key } from "../shipments.js";
import { InvalidCursor } from "./problems.js";

const TOKEN_MAX = 4096;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MOMENT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$/;

/** Whether a MOMENT's fields name a moment: a day its month has, an hour of the day, an offset
 * of less than a day (Date would roll 30 February over into March, and 24:00 into tomorrow). */
function realMoment(fields: RegExpExecArray): boolean {
  const [year, month, day, hour, minute, second, , , offsetHours, offsetMinutes] = fields
    .slice(1)
    .map((field) => Number(field ?? 0));
  const date = new Date(0);
  date.setUTCFullYear(year ?? 0, (month ?? 0) - 1, day);
  return (
    date.getUTCMonth() === (month ?? 0) - 1 &&
    date.getUTCDate() === day &&
    (hour ?? 0) < 24 &&
    (minute ?? 0) < 60 &&
    (second ?? 0) < 60 &&
    (offsetHours ?? 0) < 24 &&
    (offsetMinutes ?? 0) < 60
  );
}

export function encodeCursor(key: Key): string {
  return Buffer.from(JSON.stringify([key.createdAt.toISOString(), key.id])).toString("base64url");
}

export function decodeCursor(token: string): Key {
  const refused = new InvalidCursor("a cursor this listing did not hand out");
  if (token.length > TOKEN_MAX || !/^[A-Za-z0-9_-]*$/.test(token)) throw refused;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw refused;
  }
  if (!Array.isArray(value) || value.length !== 2) throw refused;
  const [at, id] = value as unknown[];
  const fields = typeof at === "string" ? MOMENT.exec(at) : null;
  if (fields === null || !realMoment(fields) || typeof id !== "string" || !UUID.test(id)) {
    throw refused;
  }
  const createdAt = new Date(fields[0]);
  if (Number.isNaN(createdAt.getTime())) throw refused;
  return { createdAt, id };
}
