/**
 * The script of the browser tests' page: the real client (bundled from src/ by esbuild), and a
 * small harness the tests drive with `page.evaluate`: named subscriptions whose items, progress
 * and outcome the test reads back. Tokens come from the page's own origin (`/token`), as an app
 * server would hand them out; the durable-iterator server is another origin.
 */
import { echo, ping } from "../../examples/chat/contract.js";
import { createClient, StatusError, type Client, type Event, type Subscription } from "../../src/index.js";

interface Running {
  sub: Subscription;
  controller: AbortController;
  events: Array<{ id: string; payload: unknown }>;
  reports: unknown[];
  error: string | undefined;
  done: boolean;
}

const running = new Map<string, Running>();
let client: Client | undefined;

const harness = {
  /** Points the page at the server (the test can switch it: http now, https later). */
  connect(baseUrl: string): void {
    client = createClient({ baseUrl });
  },

  /** Starts subscription `name` with tokens from `/token?<query>`. */
  start(
    name: string,
    query: string,
    options: { backoffCapMs?: number; lastEventId?: string; refreshBeforeExpirySeconds?: number } = {},
  ): void {
    if (!client) throw new Error("connect() first");
    const controller = new AbortController();
    const sub = client.subscribe({
      getToken: ({ signal }) => fetch(`/token?${query}`, { signal }).then((r) => r.text()),
      signal: controller.signal,
      backoff: options.backoffCapMs ? { baseMs: 100, capMs: options.backoffCapMs } : undefined,
      lastEventId: options.lastEventId,
      refreshBeforeExpirySeconds: options.refreshBeforeExpirySeconds,
    });
    const entry: Running = { sub, controller, events: [], reports: [], error: undefined, done: false };
    running.set(name, entry);
    void (async () => {
      try {
        for await (const item of sub) {
          if (item.kind === "event") entry.events.push({ id: (item as Event).id, payload: item.payload });
          else entry.reports.push(item);
        }
      } catch (error) {
        entry.error = error instanceof StatusError ? `${error.name} ${error.code} ${error.rawMessage}` : String(error);
      } finally {
        entry.done = true;
      }
    })();
  },

  /** What subscription `name` has seen so far. */
  state(name: string) {
    const entry = running.get(name);
    if (!entry) throw new Error(`no subscription ${name}`);
    return {
      events: entry.events,
      reports: entry.reports,
      error: entry.error,
      done: entry.done,
      progress: entry.sub.progress,
      credentials: entry.sub.credentials,
    };
  },

  /** Aborts subscription `name` through its AbortSignal. */
  abort(name: string): void {
    running.get(name)?.controller.abort();
  },

  /** Typed calls of the chat contract, as subscription `name`'s session. */
  async chat(name: string, text: string): Promise<{ echoed: string; pong: string }> {
    const sub = running.get(name)?.sub;
    if (!sub) throw new Error(`no subscription ${name}`);
    const echoed: string = await sub.call(echo, { text });
    const pong: string = await sub.call(ping);
    return { echoed, pong };
  },

  /** The outcome of an untyped call as subscription `name`'s session: `ok` or the error's code. */
  async invokeOutcome(name: string, path: string[]): Promise<string> {
    const sub = running.get(name)?.sub;
    if (!sub) throw new Error(`no subscription ${name}`);
    try {
      await sub.invoke(path, null);
      return "ok";
    } catch (error) {
      return error instanceof StatusError ? `code ${error.code}: ${error.rawMessage}` : String(error);
    }
  },
};

declare global {
  interface Window {
    harness: typeof harness;
  }
}
window.harness = harness;
document.title = "ready";
