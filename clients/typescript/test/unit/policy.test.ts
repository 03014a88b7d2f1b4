import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { codeName, invokeIsRetryable, OK, onStatus } from "../../src/policy.js";
import { DISPOSITIONS } from "../helpers/dispositions.js";

describe("policy", () => {
  it("gives every status code the disposition of the shared table", () => {
    assert.equal(DISPOSITIONS.length, 17, "all 17 gRPC codes");
    for (const [code, disposition] of DISPOSITIONS) assert.equal(onStatus(code), disposition, codeName(code));
  });

  it("retries invokes on UNAVAILABLE only", () => {
    for (const [code] of DISPOSITIONS) assert.equal(invokeIsRetryable(code), code === Code.Unavailable, codeName(code));
  });

  it("names codes as gRPC does", () => {
    assert.equal(codeName(Code.PermissionDenied), "PERMISSION_DENIED");
    assert.equal(codeName(Code.Canceled), "CANCELLED");
    assert.equal(codeName(OK), "OK");
    assert.equal(codeName(Code.Unauthenticated), "UNAUTHENTICATED");
  });
});
