/**
 * Time, injected: every deadline of a subscription (backoff, token refresh, liveness, the
 * handshake) is read from and waited on a {@link Clock}, so tests move time by hand with a
 * {@link ManualClock} instead of sleeping.
 *
 * @module
 */

/** Wall-clock time in Unix milliseconds, and waiting for a point of it. */
export interface Clock {
  /** Now, in Unix milliseconds. */
  nowMs(): number;
  /**
   * Resolves once `nowMs() >= deadlineMs`. When `signal` aborts first it resolves at once as
   * well and releases its timer: it never rejects, so a sleep that lost a race can be left
   * behind without an unhandled rejection. Callers that care check `signal.aborted`.
   */
  sleepUntil(deadlineMs: number, signal?: AbortSignal): Promise<void>;
}

/** The longest delay `setTimeout` takes (about 24.8 days); longer waits are chained. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** The real clock: `Date.now()` and `setTimeout`. */
export class SystemClock implements Clock {
  nowMs(): number {
    return Date.now();
  }

  sleepUntil(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      // Timers may fire a little early relative to Date.now(): re-arm until the deadline
      // has really passed, so "the sleep resolved" always means "the deadline is reached".
      const arm = () => {
        const wait = deadlineMs - Date.now();
        if (wait <= 0) return done();
        timer = setTimeout(arm, Math.min(wait, MAX_TIMEOUT_MS));
      };
      signal?.addEventListener("abort", done, { once: true });
      arm();
    });
  }
}

/** The shared system clock. */
export const systemClock: Clock = new SystemClock();

interface Sleeper {
  deadlineMs: number;
  wake: () => void;
}

/**
 * A clock that moves only when told to, for tests: sleeps resolve when {@link advance} or
 * {@link set} reaches their deadline. It also tells how many sleeps are pending, which is how
 * tests prove that a closed subscription left no timer behind.
 */
export class ManualClock implements Clock {
  #now: number;
  #sleepers = new Set<Sleeper>();
  #watchers: Array<() => void> = [];

  /** A clock standing at `nowMs` (default: 1,764,000,000,000, a fixed day in 2025). */
  constructor(nowMs = 1_764_000_000_000) {
    this.#now = nowMs;
  }

  nowMs(): number {
    return this.#now;
  }

  sleepUntil(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted || deadlineMs <= this.#now) return resolve();
      const sleeper: Sleeper = {
        deadlineMs,
        wake: () => {
          this.#sleepers.delete(sleeper);
          signal?.removeEventListener("abort", sleeper.wake);
          resolve();
        },
      };
      signal?.addEventListener("abort", sleeper.wake, { once: true });
      this.#sleepers.add(sleeper);
      const watchers = this.#watchers;
      this.#watchers = [];
      for (const watcher of watchers) watcher();
    });
  }

  /** Moves the clock forward by `ms` and wakes every sleep whose deadline is reached. */
  advance(ms: number): void {
    this.set(this.#now + ms);
  }

  /** Sets the clock to `nowMs` (never backwards) and wakes every sleep now due. */
  set(nowMs: number): void {
    if (nowMs < this.#now) throw new RangeError("a ManualClock does not go backwards");
    this.#now = nowMs;
    for (const sleeper of [...this.#sleepers]) {
      if (sleeper.deadlineMs <= nowMs) sleeper.wake();
    }
  }

  /** How many sleeps are waiting. */
  get pendingSleeps(): number {
    return this.#sleepers.size;
  }

  /** The earliest pending deadline, if any. */
  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const { deadlineMs } of this.#sleepers) {
      if (next === undefined || deadlineMs < next) next = deadlineMs;
    }
    return next;
  }

  /** The pending deadlines, sorted. */
  deadlines(): number[] {
    return [...this.#sleepers].map((s) => s.deadlineMs).sort((a, b) => a - b);
  }

  /** Resolves when the next sleep starts (at once if `pending` sleeps are already waiting). */
  whenSleeping(pending = 1): Promise<void> {
    if (this.#sleepers.size >= pending) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.#sleepers.size >= pending) resolve();
        else this.#watchers.push(check);
      };
      this.#watchers.push(check);
    });
  }
}
