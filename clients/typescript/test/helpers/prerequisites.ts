/**
 * Tests that need something the machine may lack (a server binary, Chromium, a server with TLS)
 * are skipped locally, with the reason. Under `CI=true` (what `.ci/run` sets) a skip would let
 * the run pass without testing anything, so there the missing prerequisite is a failing test of
 * its own, named after it, and the run fails.
 */
import { test } from "node:test";

/** Whether this run is CI's: `CI=true` (or `CI=1`) in the environment. */
export function inCi(): boolean {
  return /^(true|1)$/i.test(process.env.CI ?? "");
}

const failed = new Set<string>();

/**
 * `reason` for `{ skip }`: the tests it guards are skipped (locally that is all). Under CI,
 * also registers, once per reason and where it is called (top level or the suite being
 * defined), a test that fails with the reason.
 */
export function skipUnlessCi(reason: string | undefined): string | undefined {
  if (reason === undefined || !inCi() || failed.has(reason)) return reason;
  failed.add(reason);
  test(`prerequisite: ${reason}`, () => {
    throw new Error(`${reason} (CI=true: a missing prerequisite fails the run instead of skipping its tests)`);
  });
  return reason;
}
