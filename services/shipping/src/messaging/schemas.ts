// Every message shipping takes in or sends out is checked against the JSON Schema its publisher
// exported (docs/contracts, copied into the generated contracts/events.ts).
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { type EventData, SCHEMAS } from "../contracts/events.js";

export type EventTypeName = keyof EventData;

/** The message is not a valid event of its type; no retry will change that. */
export class Poison extends Error {
  override name = "Poison";
}

// The CloudEvents envelope, as contracts.export writes it into asyncapi.yaml.
const ENVELOPE = {
  type: "object",
  required: ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
  properties: {
    specversion: { const: "1.0" },
    id: { type: "string", minLength: 1 },
    source: { type: "string", minLength: 1 },
    type: { type: "string", minLength: 1 },
    time: { type: "string", format: "date-time" },
    subject: { type: "string" },
    datacontenttype: { type: "string" },
    data: { type: "object" },
  },
};

const ajv = new Ajv2020({ allErrors: true, strict: false });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);
const validators = new Map<string, ValidateFunction>(
  Object.entries(SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]),
);
const validEnvelope = ajv.compile(ENVELOPE);

/** "data/shipping_address/country must match pattern ..." for each failure, joined. */
export function describe(errors: readonly ErrorObject[] | null | undefined, root: string): string {
  return (errors ?? [])
    .map((error) => {
      const missing =
        error.keyword === "required"
          ? `/${(error.params as { missingProperty: string }).missingProperty}`
          : "";
      const field = `${root}${error.instancePath}${missing}`;
      return `${field} ${error.message ?? "is not valid"}`;
    })
    .join("; ");
}

/** Checks `data` against the schema of `type`; throws Poison naming each failing field. */
export function validate<T extends EventTypeName>(type: T, data: unknown): EventData[T] {
  const check = validators.get(type);
  if (check === undefined) throw new Poison(`no schema for ${type}`);
  if (!check(data))
    throw new Poison(`not a valid ${type} event: ${describe(check.errors, "data")}`);
  return data as EventData[T];
}

/** Reads a message's bytes as a CloudEvent of `type` whose data its schema accepts. */
export function parseEvent<T extends EventTypeName>(
  type: T,
  bytes: Uint8Array,
): { id: string; source: string; subject?: string; type: string; data: EventData[T] } {
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new Poison(`not a valid ${type} event: the message is not JSON`);
  }
  if (!validEnvelope(document)) {
    throw new Poison(`not a valid ${type} event: ${describe(validEnvelope.errors, "envelope")}`);
  }
  const event = document as {
    id: string;
    source: string;
    subject?: string;
    type: string;
    data: unknown;
  };
  if (event.type !== type) {
    throw new Poison(`not a valid ${type} event: envelope/type is ${JSON.stringify(event.type)}`);
  }
  return { ...event, data: validate(type, event.data) };
}
