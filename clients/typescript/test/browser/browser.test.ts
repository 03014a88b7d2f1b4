/**
 * Real browser tests: headless Chromium (Debian's) loads a page from one origin and subscribes
 * over grpc-web to the server on another (CORS), with the client bundled from src/. The server
 * target is a parameter: over plain HTTP/1.1 now; the ten-subscription test runs over https
 * (HTTP/2) once the server binary has `serve --tls-cert`.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, afterEach, before, describe, it } from "node:test";

import { createAdmin } from "../../src/admin.js";
import {
  API_KEY,
  chatBin,
  makeCertificate,
  missingBinary,
  PACKAGE_ROOT,
  restart,
  serverBin,
  serverHasTls,
  SIGNING_KEY,
  startChat,
  startServer,
  type RunningServer,
} from "../helpers/server.js";
import { Browser, bundle, missingChromium, PageServer } from "./harness.js";

const skip = missingChromium() ?? missingBinary(serverBin(), "DURABLE_ITERATOR_BIN");

interface PageState {
  events: Array<{ id: string; payload: { n: number } }>;
  reports: unknown[];
  error: string | undefined;
  done: boolean;
  progress: { state: { kind: string }; connections: number; sessionId?: string };
}

describe("in Chromium", { skip }, () => {
  let script = "";
  let pages: PageServer;
  const servers: RunningServer[] = [];
  const browsers: Browser[] = [];

  before(async () => {
    script = await bundle();
    pages = new PageServer(script);
    await pages.listen();
  });
  after(async () => {
    await pages?.close();
  });
  afterEach(async () => {
    await Promise.all(browsers.splice(0).map((b) => b.close()));
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  async function open(baseUrl: string, options: { ignoreCertificateErrors?: boolean } = {}) {
    const browser = await Browser.open(pages.url, options);
    browsers.push(browser);
    const page = browser.page;
    await page.evaluate((url) => window.harness.connect(url), baseUrl);
    const start = (name: string, query: string, opts: { backoffCapMs?: number; lastEventId?: string } = {}) =>
      page.evaluate(([n, q, o]) => window.harness.start(n, q, o), [name, query, opts] as const);
    const state = (name: string) => page.evaluate((n) => window.harness.state(n), name) as Promise<PageState>;
    const until = async (name: string, condition: string, what: string) => {
      // `condition` is an expression over `s`, the subscription's state in the page.
      await page
        .waitForFunction(([n, c]) => new Function("s", `return ${c}`)(window.harness.state(n)), [name, condition] as const, {
          timeout: 30_000,
          polling: 50,
        })
        .catch(async (error: unknown) => {
          throw new Error(`${what}: ${String(error)}; page state: ${JSON.stringify(await state(name))}`);
        });
    };
    return { page, start, state, until };
  }

  async function serve(args: string[] = []) {
    const server = await startServer({ args });
    servers.push(server);
    return server;
  }

  async function publish(server: RunningServer, from: number, to: number) {
    const admin = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY });
    for (let n = from; n < to; n++) await admin.publish({ channel: "lobby", payload: { n } });
  }

  it("a subscription in the page receives published events (cross-origin grpc-web)", async () => {
    const server = await serve();
    const { start, until, state } = await open(server.baseUrl);
    await start("a", "chn=lobby");
    await until("a", `s.progress.state.kind === "live"`, "live");
    await publish(server, 0, 5);
    await until("a", "s.events.length >= 5", "five events");
    const s = await state("a");
    assert.deepEqual(s.events.map((e) => e.payload.n), [0, 1, 2, 3, 4]);
    assert.equal(s.error, undefined);
    assert.equal(s.progress.connections, 1);
  });

  it("a fatal code ends the page's subscription with a typed error", async () => {
    const server = await serve();
    const { start, until, state } = await open(server.baseUrl);
    await start("bad", "chn=lobby", { lastEventId: "not-an-id" });
    await until("bad", "s.done", "the failure");
    const s = await state("bad");
    assert.match(String(s.error), /^StatusError 3 /, "INVALID_ARGUMENT");
    assert.equal(s.progress.state.kind, "closed");
  });

  it("survives kill -9 and a restart mid-stream: every event exactly once, in order", async () => {
    let server = await serve(["--heartbeat-seconds", "1"]);
    const { start, until, state } = await open(server.baseUrl);
    await start("a", "chn=lobby", { backoffCapMs: 500 });
    await until("a", `s.progress.state.kind === "live"`, "live");
    const sessionId = (await state("a")).progress.sessionId;
    await publish(server, 0, 30);
    await until("a", "s.events.length >= 10", "events before the kill");
    await server.kill();
    server = await restart(server);
    servers.push(server);
    await publish(server, 30, 60);
    await until("a", "s.events.length >= 60", "every event");
    await until("a", "s.progress.connections >= 2", "the reconnect");
    const s = await state("a");
    assert.deepEqual(s.events.map((e) => e.payload.n), Array.from({ length: 60 }, (_, i) => i));
    assert.equal(new Set(s.events.map((e) => e.id)).size, 60, "no event twice");
    assert.equal(s.progress.sessionId, sessionId, "the same session");
    assert.equal(s.error, undefined);
  });

  it("calls typed methods of the chat server", { skip: missingBinary(chatBin(), "DURABLE_ITERATOR_CHAT_BIN") }, async () => {
    const chat = await startChat();
    servers.push(chat);
    const { page, start, until } = await open(chat.baseUrl);
    await start("bob", `chn=chat:1&rpc=routerClient,sendMessage&att=${encodeURIComponent('{"userId":"bob"}')}`);
    await until("bob", `s.progress.state.kind === "live"`, "live");
    const answers = await page.evaluate(() => window.harness.chat("bob", "hi from Chromium"));
    assert.deepEqual(answers, { echoed: "Echo: hi from Chromium", pong: "pong" });
    // Refusals reach the page with their codes (grpc-status readable across origins).
    const notAllowed = await page.evaluate(() => window.harness.invokeOutcome("bob", ["forbidden", "x"]));
    assert.match(notAllowed, /^code 7: /, "PERMISSION_DENIED");
    const unknown = await page.evaluate(() => window.harness.invokeOutcome("bob", ["routerClient", "nope"]));
    assert.match(unknown, /^code 5: /, "NOT_FOUND");
  });

  it("abort closes the streams: six aborted, six more go live on the same HTTP/1.1 host", async () => {
    // Chromium holds at most 6 connections per host over HTTP/1.1: the second six can open only
    // if aborting really closed the first six.
    const server = await serve();
    const { start, until, page, state } = await open(server.baseUrl);
    const names = ["a", "b", "c", "d", "e", "f"];
    for (const name of names) await start(name, "chn=lobby");
    for (const name of names) await until(name, `s.progress.state.kind === "live"`, `${name} live`);
    for (const name of names) await page.evaluate((n) => window.harness.abort(n), name);
    for (const name of names) {
      await until(name, `s.done && s.progress.state.kind === "closed"`, `${name} closed`);
      assert.equal((await state(name)).error, undefined, "closed, not failed");
    }
    const more = names.map((n) => `${n}2`);
    for (const name of more) await start(name, "chn=lobby");
    for (const name of more) await until(name, `s.progress.state.kind === "live"`, `${name} live`);
    await publish(server, 0, 1);
    for (const name of more) await until(name, "s.events.length === 1", `${name}'s event`);
  });

  it("the chat demo: what alice sends, bob's page shows", { skip: missingBinary(chatBin(), "DURABLE_ITERATOR_CHAT_BIN") }, async () => {
    const chat = await startChat();
    servers.push(chat);
    const { startDemo } = (await import(pathToFileURL(join(PACKAGE_ROOT, "examples/chat/serve.mjs")).href)) as {
      startDemo: (o: object) => Promise<{ url: string; close: () => Promise<void> }>;
    };
    const demo = await startDemo({ listen: "127.0.0.1:0", serverUrl: chat.baseUrl, signingKey: SIGNING_KEY });
    try {
      const browser = await Browser.open(`${demo.url}?user=bob&room=test`, { ready: "#status.live" });
      browsers.push(browser);
      const bob = browser.page;
      const alice = await browser.context.newPage();
      await alice.goto(`${demo.url}?user=alice&room=test`);
      await alice.waitForSelector("#status.live", { timeout: 30_000 });
      await alice.fill("#text", "hello bob");
      await alice.press("#text", "Enter");
      await bob.waitForFunction(() => document.querySelector("#messages")?.textContent?.includes("alice:hello bob"), undefined, {
        timeout: 30_000,
      });
      // Alice sees her own copy once: the room does not send it back to her.
      await alice.waitForSelector("#messages li.mine");
      const aliceLines = await alice.$$eval("#messages li", (items) => items.map((i) => i.textContent));
      assert.deepEqual(aliceLines, ["alice:hello bob"]);
      if (process.env.DEMO_SCREENSHOT) await bob.screenshot({ path: process.env.DEMO_SCREENSHOT });
    } finally {
      await demo.close();
    }
  });

  describe("over https (HTTP/2)", () => {
    const tlsSkip = serverHasTls() ? undefined : "the server binary has no `serve --tls-cert` yet: ten subscriptions need HTTP/2, which browsers speak only over TLS";
    it("ten subscriptions on one page, each receiving every event", { skip: tlsSkip }, async () => {
      const dir = mkdtempSync(join(tmpdir(), "di-ts-tls-"));
      try {
        const tls = makeCertificate(dir);
        assert.ok(tls, "openssl is needed to make a test certificate");
        const server = await startServer({ tls });
        servers.push(server);
        const { start, until, state } = await open(server.baseUrl, { ignoreCertificateErrors: true });
        const names = Array.from({ length: 10 }, (_, i) => `s${i}`);
        for (const name of names) await start(name, "chn=lobby");
        for (const name of names) await until(name, `s.progress.state.kind === "live"`, `${name} live`);
        const admin = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch: insecureFetch() });
        for (let n = 0; n < 5; n++) await admin.publish({ channel: "lobby", payload: { n } });
        for (const name of names) {
          await until(name, "s.events.length >= 5", `${name}'s events`);
          assert.deepEqual((await state(name)).events.map((e) => e.payload.n), [0, 1, 2, 3, 4]);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

/** A fetch for the admin calls of the https test that accepts the self-signed certificate. */
function insecureFetch(): typeof globalThis.fetch {
  // Tests only: the page trusts the same certificate by ignoring certificate errors.
  return async (input, init) => {
    const undici = await import("undici");
    const dispatcher = new undici.Agent({ connect: { rejectUnauthorized: false } });
    return undici.fetch(input as never, { ...(init as object), dispatcher } as never) as unknown as Response;
  };
}
