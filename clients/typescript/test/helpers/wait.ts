/** Waiting in unit tests without sleeping: yield to the event loop until a condition holds. */

/** One turn of the event loop (every pending promise callback and I/O callback runs). */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Yields until `condition()` holds, at most `turns` turns of the event loop (a count, not a
 * time: the code under test only needs promise callbacks to run).
 */
export async function until(condition: () => boolean, what: string, turns = 2_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (condition()) return;
    await tick();
  }
  throw new Error(`still waiting for ${what} after ${turns} turns of the event loop`);
}

/** Settles the promise within a bounded number of turns, or fails naming `what`. */
export async function settle<T>(promise: Promise<T>, what: string, turns = 2_000): Promise<T> {
  let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
  promise.then(
    (value) => (outcome = { ok: true, value }),
    (error: unknown) => (outcome = { ok: false, error }),
  );
  await until(() => outcome !== undefined, what, turns);
  if (outcome!.ok) return outcome!.value;
  throw outcome!.error;
}
