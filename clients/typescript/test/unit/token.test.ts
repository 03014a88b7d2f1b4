import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ManualClock } from "../../src/clock.js";
import { signToken, signingProvider, firstKey } from "../../src/sign.js";
import { refreshableInPlace, unverifiedClaims } from "../../src/token.js";

// The oRPC vectors of the server's token tests (key "secret-key").
const VECTOR_FULL =
  '{"chn":"some-room","tags":["tag1","tag2"],"att":{"userId":"user-123"},"rpc":["singleClient","routerClient"],"iat":1764000000,"exp":1764086400}.Ix1V4qm5c6clo80AHQLzdan8rDwa6WEirtl7jvF0vPQ';
const VECTOR_LOBBY = '{"chn":"lobby","iat":1764000000,"exp":1764000600}.jikHfH4J3KyQjzKow1J0F7M6loaxo-4U2yJ6yY8X408';

describe("tokens", () => {
  it("signs byte-identically to oRPC and the server", () => {
    for (const vector of [VECTOR_FULL, VECTOR_LOBBY]) {
      const claims = unverifiedClaims(vector);
      assert.ok(claims);
      assert.equal(signToken("secret-key", claims), vector);
    }
  });

  it("keeps attachment keys in their order and splits at the last dot", () => {
    const token = signToken("k", { chn: "a.b.c", att: { z: 1, a: { y: 2, b: 3 } }, iat: 10, exp: 15 });
    assert.ok(token.startsWith('{"chn":"a.b.c","att":{"z":1,"a":{"y":2,"b":3}},"iat":10'));
    assert.equal(unverifiedClaims(token)?.chn, "a.b.c");
  });

  it("reads only tokens of the right shape", () => {
    for (const garbage of ["", "no-dot", '{"chn":"x"}.sig', '{"chn":1,"iat":0,"exp":9}.s', "[].s", '{"chn":"x","iat":-1,"exp":9}.s', '{"chn":"x","tags":[1],"iat":0,"exp":9}.s']) {
      assert.equal(unverifiedClaims(garbage), undefined, garbage);
    }
  });

  it("refreshes in place only with the same channel and tag set", () => {
    const sign = (chn: string, tags: string[]) => signToken("k", { chn, tags, iat: 0, exp: 10 });
    // [current, next, in place]
    const table: Array<[string, string, boolean]> = [
      [sign("c", ["a", "b"]), sign("c", ["b", "a", "a"]), true],
      [sign("c", ["a"]), sign("c", ["a", "b"]), false],
      [sign("c", ["a"]), sign("d", ["a"]), false],
      [sign("c", []), signToken("k", { chn: "c", iat: 5, exp: 50 }), true],
      ["garbage", sign("c", []), false],
    ];
    for (const [current, next, inPlace] of table) assert.equal(refreshableInPlace(current, next), inPlace, `${current} -> ${next}`);
  });

  it("mints at the clock's now with the first key of a list", () => {
    const clock = new ManualClock(10_000);
    const provider = signingProvider({ signingKey: "new,old", channel: "room", tags: ["a"], ttlSeconds: 60, clock });
    const token = provider({ signal: new AbortController().signal }) as string;
    assert.deepEqual(unverifiedClaims(token), { chn: "room", tags: ["a"], att: undefined, rpc: undefined, iat: 10, exp: 70 });
    assert.equal(token, signToken("new", { chn: "room", tags: ["a"], iat: 10, exp: 70 }));
    assert.throws(() => firstKey(""), /empty/);
  });
});
