// The event envelope (CloudEvents 1.0, structured JSON) and the subject naming rules, as the
// chassis has them (libs/agora/src/agora/messaging/envelope.py, libs/contracts base.subject_of).
import { randomUUID } from "node:crypto";

export const SUBJECT_ROOT = "agora";
const TYPE =
  /^(?<publisher>[a-z][a-z0-9-]*)\.(?<name>[A-Z][A-Za-z0-9]*)\.v(?<version>[1-9][0-9]*)$/;

export interface CloudEvent<D = Record<string, unknown>> {
  readonly specversion: "1.0";
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly time: string;
  readonly subject?: string;
  readonly datacontenttype: string;
  readonly data: D;
}

export interface EventType {
  readonly publisher: string;
  readonly name: string;
  readonly version: number;
}

export function parseType(value: string): EventType {
  const match = TYPE.exec(value);
  if (!match?.groups) {
    throw new Error(`${JSON.stringify(value)} is not an event type of the form publisher.Name.vN`);
  }
  const { publisher = "", name = "", version = "" } = match.groups;
  return { publisher, name, version: Number(version) };
}

/** agora.<publisher>.events.<Name>.v<N>: where events of this type travel. */
export function subjectOf(type: string): string {
  const { publisher, name, version } = parseType(type);
  return `${SUBJECT_ROOT}.${publisher}.events.${name}.v${version}`;
}

export function deadLetterSubject(service: string, consumer: string): string {
  return `${SUBJECT_ROOT}.${service}.dead.${consumer}`;
}

/** The JetStream stream holding everything `service` publishes (agora.<service>.>). */
export function streamName(service: string): string {
  return `AGORA_${service.toUpperCase().replaceAll("-", "_")}`;
}

export function streamSubjects(service: string): string[] {
  return [`${SUBJECT_ROOT}.${service}.>`];
}

/** Wrap an event's data for the wire: a new id, the time now, its type. */
export function envelope<D>(
  type: string,
  data: D,
  source: string,
  subject?: string,
): CloudEvent<D> {
  return {
    specversion: "1.0",
    id: randomUUID(),
    source,
    type,
    time: new Date().toISOString(),
    ...(subject === undefined ? {} : { subject }),
    datacontenttype: "application/json",
    data,
  };
}
