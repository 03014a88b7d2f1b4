import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";

import { jsonToProto, protoToJson, toJsonValue } from "../../src/json.js";

describe("json", () => {
  it("round-trips JSON values, whole numbers staying whole", () => {
    const value = { a: [1, 2.5, -3, null, true, "s"], b: { c: 9007199254740992 }, "": {} };
    assert.deepEqual(protoToJson(jsonToProto(value)), value);
    const three = protoToJson(jsonToProto(3));
    assert.ok(Number.isInteger(three));
    assert.equal(JSON.stringify(protoToJson(jsonToProto({ n: 3 }))), '{"n":3}');
  });

  it("reads an absent value, NaN and infinities as null", () => {
    assert.equal(protoToJson(undefined), null);
    assert.equal(protoToJson(create(ValueSchema, {})), null);
    assert.equal(protoToJson(create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } })), null);
    assert.equal(protoToJson(jsonToProto(Number.POSITIVE_INFINITY)), null);
  });

  it("sorts object keys, as the other clients do", () => {
    assert.deepEqual(Object.keys(protoToJson(jsonToProto({ z: 1, a: 2, m: 3 })) as object), ["a", "m", "z"]);
  });

  it("encodes inputs as JSON.stringify would, and refuses what it refuses", () => {
    assert.equal(toJsonValue(undefined), null);
    assert.deepEqual(toJsonValue({ a: undefined, b: 1, d: new Date(0) }), { b: 1, d: "1970-01-01T00:00:00.000Z" });
    assert.throws(() => toJsonValue(1n), TypeError);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    assert.throws(() => toJsonValue(cycle), TypeError);
    assert.throws(() => toJsonValue(() => 1), /a function is not a JSON value/);
  });
});
