/**
 * JSON as the contract carries it: inputs, outputs and payloads travel as `google.protobuf.Value`,
 * but user code only ever sees plain JSON values. This module is the one place that converts.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  ListValueSchema,
  NullValue,
  StructSchema,
  ValueSchema,
  type Value,
} from "@bufbuild/protobuf/wkt";

/** A plain JSON value: what `JSON.parse` returns. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/**
 * `value` as the JSON value `JSON.stringify` would send: `undefined` properties are dropped,
 * `toJSON` is honoured (a `Date` becomes its ISO string), `NaN` and infinities become `null`,
 * and `undefined` itself becomes `null` (a method without input).
 *
 * @throws whatever `JSON.stringify` throws (a `BigInt`, a cycle): callers wrap it in their
 * `EncodeError`.
 */
export function toJsonValue(value: unknown): JsonValue {
  if (value === undefined) return null;
  const text = JSON.stringify(value);
  // `JSON.stringify` returns undefined for a function or a symbol at the top level.
  if (text === undefined) {
    throw new TypeError(`a ${typeof value} is not a JSON value`);
  }
  return JSON.parse(text) as JsonValue;
}

/** A JSON value as a `google.protobuf.Value` (numbers are doubles, as protobuf has them). */
export function jsonToProto(value: JsonValue): Value {
  return create(ValueSchema, { kind: kindOf(value) });
}

function kindOf(value: JsonValue): Value["kind"] {
  if (value === null) return { case: "nullValue", value: NullValue.NULL_VALUE };
  switch (typeof value) {
    case "boolean":
      return { case: "boolValue", value };
    case "number":
      // JSON cannot hold NaN or infinities; neither can the other clients.
      return Number.isFinite(value)
        ? { case: "numberValue", value }
        : { case: "nullValue", value: NullValue.NULL_VALUE };
    case "string":
      return { case: "stringValue", value };
    default:
      break;
  }
  if (Array.isArray(value)) {
    return {
      case: "listValue",
      value: create(ListValueSchema, { values: value.map(jsonToProto) }),
    };
  }
  const fields: Record<string, Value> = {};
  for (const [key, item] of Object.entries(value)) fields[key] = jsonToProto(item);
  return { case: "structValue", value: create(StructSchema, { fields }) };
}

/**
 * A `google.protobuf.Value` as a plain JSON value; an absent value is `null`. Whole numbers stay
 * whole numbers (a JavaScript number is one already); NaN and infinities, which JSON cannot
 * hold, become `null`. Object keys come sorted, as the other clients give them (protobuf maps
 * carry no order).
 */
export function protoToJson(value: Value | undefined): JsonValue {
  const kind = value?.kind;
  switch (kind?.case) {
    case undefined:
    case "nullValue":
      return null;
    case "boolValue":
      return kind.value;
    case "numberValue":
      return Number.isFinite(kind.value) ? kind.value : null;
    case "stringValue":
      return kind.value;
    case "listValue":
      return kind.value.values.map(protoToJson);
    case "structValue": {
      const object: { [key: string]: JsonValue } = {};
      for (const key of Object.keys(kind.value.fields).sort()) {
        object[key] = protoToJson(kind.value.fields[key]);
      }
      return object;
    }
  }
}
