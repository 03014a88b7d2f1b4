import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Backoff } from "../../src/backoff.js";

describe("backoff", () => {
  it("has the schedule of the shared design: at once, then 1 s doubling, capped at 10 s", () => {
    const backoff = new Backoff();
    // [retry, ceiling ms]
    const table: Array<[number, number]> = [
      [0, 0],
      [1, 0],
      [2, 1_000],
      [3, 2_000],
      [4, 4_000],
      [5, 8_000],
      [6, 10_000],
      [7, 10_000],
      [40, 10_000],
      [2 ** 32, 10_000],
    ];
    for (const [retry, ceiling] of table) assert.equal(backoff.ceiling(retry), ceiling, `retry ${retry}`);
  });

  it("draws full jitter from zero to the ceiling", () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 1_000 });
    // [retry, unit draw, delay ms]
    const table: Array<[number, number, number]> = [
      [1, 0.99, 0],
      [2, 0, 0],
      [2, 0.5, 50],
      [3, 0.25, 50],
      [4, 0.999, 399],
      [9, 0.5, 500],
      [9, 7, 1_000],
      [9, -1, 0],
      [9, Number.NaN, 0],
    ];
    for (const [retry, unit, delay] of table) {
      assert.equal(backoff.delay(retry, unit), delay, `retry ${retry}, draw ${unit}`);
    }
    for (let retry = 0; retry < 20; retry++) {
      assert.ok(backoff.randomDelay(retry) <= backoff.ceiling(retry));
    }
  });

  it("makes patient delays that never go at once", () => {
    const backoff = new Backoff();
    // [retry, unit draw, delay ms]: at least half the ceiling, the first retry included.
    const table: Array<[number, number, number]> = [
      [0, 0, 500],
      [1, 0, 500],
      [2, 0, 500],
      [2, 1, 1_000],
      [4, 0.5, 3_000],
      [9, 0, 5_000],
    ];
    for (const [retry, unit, delay] of table) {
      assert.equal(backoff.patientDelay(retry, unit), delay, `retry ${retry}, draw ${unit}`);
    }
  });

  it("counts attempts against the limit", () => {
    assert.equal(new Backoff().exhausted(2 ** 40), false);
    const three = new Backoff({ maxAttempts: 3 });
    const table: Array<[number, boolean]> = [
      [1, false],
      [3, false],
      [4, true],
      [100, true],
    ];
    for (const [retry, exhausted] of table) assert.equal(three.exhausted(retry), exhausted, `retry ${retry}`);
  });

  it("refuses negative settings with a message naming them", () => {
    assert.throws(() => new Backoff({ baseMs: -1 }), /backoff\.baseMs must be a number >= 0/);
    assert.throws(() => new Backoff({ capMs: Number.NaN }), /backoff\.capMs/);
  });
});
