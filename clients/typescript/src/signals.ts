/**
 * Small tools for waiting on several things at once without leaving a timer, a listener or an
 * unhandled rejection behind: the subscription races its stream against deadlines and its own
 * closing all the time, and each race must clean up after itself.
 *
 * @module
 */
import type { Clock } from "./clock.js";

/** A promise whose outcome can be read synchronously once it has settled. */
export interface Tracked<T> {
  /** Resolves (never rejects) when the promise has settled. */
  readonly settled: Promise<void>;
  /** The outcome, once settled. */
  outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
}

/** Tracks `promise`; its rejection is caught here, so it is never unhandled. */
export function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked: Tracked<T> = {
    settled: promise.then(
      (value) => {
        tracked.outcome = { ok: true, value };
      },
      (error: unknown) => {
        tracked.outcome = { ok: false, error };
      },
    ),
    outcome: undefined,
  };
  return tracked;
}

/**
 * Waits until one of `pending` settles, `signal` aborts, or one of `deadlines` (Unix ms on
 * `clock`; `undefined`: none) passes. Returns which deadlines passed. Every timer and listener
 * it set is released before it returns.
 */
export async function waitAny(
  clock: Clock,
  signal: AbortSignal,
  pending: ReadonlyArray<Promise<unknown>>,
  deadlines: ReadonlyArray<number | undefined>,
): Promise<boolean[]> {
  const fired = deadlines.map(() => false);
  if (signal.aborted) return fired;
  const scope = new AbortController();
  const arms: Promise<unknown>[] = [...pending];
  deadlines.forEach((deadline, index) => {
    if (deadline === undefined) return;
    arms.push(
      clock.sleepUntil(deadline, scope.signal).then(() => {
        if (!scope.signal.aborted) fired[index] = true;
      }),
    );
  });
  let onAbort: () => void = () => {};
  arms.push(
    new Promise<void>((resolve) => {
      onAbort = () => resolve();
      signal.addEventListener("abort", onAbort, { once: true });
    }),
  );
  try {
    await Promise.race(arms);
  } finally {
    scope.abort();
    signal.removeEventListener("abort", onAbort);
  }
  return fired;
}

/**
 * A signal that aborts when any of `signals` does, and a `release` that detaches it from them
 * (call it when done, so a long-lived signal does not collect listeners).
 */
export function anySignal(...signals: Array<AbortSignal | undefined>): {
  signal: AbortSignal;
  release: () => void;
} {
  const controller = new AbortController();
  const sources = signals.filter((s): s is AbortSignal => s !== undefined);
  const onAbort = () => {
    release();
    controller.abort();
  };
  const release = () => {
    for (const source of sources) source.removeEventListener("abort", onAbort);
  };
  for (const source of sources) {
    if (source.aborted) {
      onAbort();
      break;
    }
    source.addEventListener("abort", onAbort, { once: true });
  }
  return { signal: controller.signal, release };
}
