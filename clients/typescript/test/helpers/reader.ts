/** Reading a real subscription in the integration tests, with every wait bounded. */
import type { Event, SubscriptionItem } from "../../src/items.js";
import type { Subscription } from "../../src/subscription.js";
import { bounded } from "./server.js";

/** Reads `sub` in the background and keeps what it yields. */
export class Reader {
  readonly items: SubscriptionItem[] = [];
  error: unknown;
  done = false;
  readonly finished: Promise<void>;
  #waiters = new Set<() => void>();

  constructor(readonly sub: Subscription) {
    this.finished = (async () => {
      try {
        for await (const item of sub) {
          this.items.push(item);
          this.#notify();
        }
      } catch (error) {
        this.error = error;
      } finally {
        this.done = true;
        this.#notify();
      }
    })();
  }

  get events(): Event[] {
    return this.items.filter((i): i is Event => i.kind === "event");
  }

  #notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Resolves once `condition()` holds; rejects after `ms` naming `what`. */
  async until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
    if (condition()) return;
    let waiter: () => void = () => {};
    try {
      await bounded(
        new Promise<void>((resolve) => {
          waiter = () => {
            if (condition()) resolve();
          };
          this.#waiters.add(waiter);
        }),
        ms,
        `${what} (${this.events.length} events so far${this.error ? `, failed: ${String(this.error)}` : ""})`,
      );
    } finally {
      this.#waiters.delete(waiter);
    }
  }

  /** Waits for `n` events in all. */
  untilEvents(n: number, ms?: number): Promise<void> {
    return this.until(() => this.events.length >= n || this.done, `${n} events`, ms).then(() => {
      if (this.events.length < n) throw new Error(`the subscription ended after ${this.events.length} of ${n} events: ${String(this.error)}`);
    });
  }
}

/** Resolves when `condition()` holds, checking on each progress change; bounded. */
export async function untilProgress(sub: Subscription, condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  if (condition()) return;
  let stop: () => void = () => {};
  try {
    await bounded(
      new Promise<void>((resolve) => {
        stop = sub.onProgress(() => {
          if (condition()) resolve();
        });
      }),
      ms,
      `${what} (now ${JSON.stringify(sub.progress)})`,
    );
  } finally {
    stop();
  }
}
