/**
 * The reconnect schedule: the first retry at once, then exponential backoff with full jitter,
 * capped. Pure: the random draw is passed in, so the schedule is tested as a table.
 *
 * @module
 */

/** How long to wait between reconnect attempts, and how many to make. */
export interface BackoffOptions {
  /** The ceiling of the second retry; each later one doubles it. Default 1,000 ms. */
  baseMs?: number;
  /** No wait is longer than this. Default 10,000 ms. */
  capMs?: number;
  /** Retries in a row before giving up; `undefined` (the default) retries forever. */
  maxAttempts?: number | undefined;
}

/**
 * Retry `n` (1-based, counted since the stream last proved itself) waits a random time in
 * `[0, ceiling(n)]`, where `ceiling(1) = 0` (the first retry goes at once: most breaks are a
 * server restart or a dropped connection, gone by the time we retry) and
 * `ceiling(n) = min(cap, base × 2^(n−2))` after that. Full jitter spreads the clients of a
 * restarted server over the whole window instead of letting them arrive in waves.
 */
export class Backoff {
  readonly baseMs: number;
  readonly capMs: number;
  readonly maxAttempts: number | undefined;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = nonNegative(options.baseMs ?? 1_000, "backoff.baseMs");
    this.capMs = nonNegative(options.capMs ?? 10_000, "backoff.capMs");
    this.maxAttempts =
      options.maxAttempts === undefined
        ? undefined
        : nonNegative(options.maxAttempts, "backoff.maxAttempts");
  }

  /** The longest wait before retry `retry` (1-based), in ms; 0 for the first. */
  ceiling(retry: number): number {
    if (retry <= 1) return 0;
    // 2 ** large is Infinity, and min() brings it back to the cap.
    return Math.min(this.capMs, this.baseMs * 2 ** (retry - 2));
  }

  /** The wait before retry `retry` given a uniform draw `unit` in `[0, 1)`, in whole ms. */
  delay(retry: number, unit: number): number {
    return Math.floor(this.ceiling(retry) * clampUnit(unit));
  }

  /** {@link delay} with a fresh random draw. */
  randomDelay(retry: number, random: () => number = Math.random): number {
    return this.delay(retry, random());
  }

  /**
   * At least half the ceiling of retry `retry` (the other half jittered), in whole ms: for
   * retrying the token provider or `RefreshToken`, which must never be asked again at once.
   */
  patientDelay(retry: number, unit: number): number {
    const half = this.ceiling(Math.max(retry, 2)) / 2;
    return Math.floor(half + half * clampUnit(unit));
  }

  /** {@link patientDelay} with a fresh random draw. */
  randomPatientDelay(retry: number, random: () => number = Math.random): number {
    return this.patientDelay(retry, random());
  }

  /** Whether retry `retry` (1-based) is beyond the attempt limit. */
  exhausted(retry: number): boolean {
    return this.maxAttempts !== undefined && retry > this.maxAttempts;
  }
}

function clampUnit(unit: number): number {
  if (Number.isNaN(unit)) return 0;
  return Math.min(1, Math.max(0, unit));
}

function nonNegative(value: number, name: string): number {
  if (!(value >= 0)) throw new RangeError(`${name} must be a number >= 0, not ${value}`);
  return value;
}
