/**
 * Real browser tests: headless Chromium (Debian's) loads a page from one origin and subscribes
 * over grpc-web to the server on another (CORS), with the client bundled from src/. The server
 * target is a parameter: plain HTTP/1.1, or https (`serve --dev-tls`, and the chat example with
 * `DURABLE_ITERATOR_DEV_TLS=1`) where Chromium speaks HTTP/2, which the https tests assert from
 * Chromium's own account of each response (DevTools).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, afterEach, before, describe, it } from "node:test";

import { Code, createClient as createRpcClient, type Client as RpcClient } from "@connectrpc/connect";

import { createAdmin } from "../../src/admin.js";
import { StatusError } from "../../src/errors.js";
import { DurableIterator } from "../../src/gen/durable_iterator/v1/durable_iterator_pb.js";
import { fetchWithCa } from "../../src/node.js";
import { signToken } from "../../src/sign.js";
import { unverifiedClaims } from "../../src/token.js";
import { createTransport } from "../../src/transport.js";
import {
  API_KEY,
  bounded,
  chatBin,
  missingBinary,
  missingChatTls,
  missingTls,
  PACKAGE_ROOT,
  restart,
  serverBin,
  SIGNING_KEY,
  startChat,
  startServer,
  type RunningServer,
} from "../helpers/server.js";
import { Browser, bundle, missingChromium, PageServer, type SeenResponse } from "./harness.js";

// Both asked, so that under CI=true each missing one is a failure of its own.
const skip = [missingChromium(), missingBinary(serverBin(), "DURABLE_ITERATOR_BIN")].find((reason) => reason !== undefined);

interface PageState {
  events: Array<{ id: string; payload: { n: number } }>;
  reports: unknown[];
  error: string | undefined;
  done: boolean;
  progress: { state: { kind: string }; connections: number; refreshes: number; sessionId?: string };
  credentials: { token: string; sessionTicket?: string };
}

interface StartOptions {
  backoffCapMs?: number;
  lastEventId?: string;
  refreshBeforeExpirySeconds?: number;
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

  async function open(baseUrl: string, options: { trust?: string[]; recordResponses?: boolean } = {}) {
    const browser = await Browser.open(pages.url, options);
    browsers.push(browser);
    const page = browser.page;
    await page.evaluate((url) => window.harness.connect(url), baseUrl);
    const start = (name: string, query: string, opts: StartOptions = {}) =>
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
    return { browser, page, start, state, until };
  }

  async function serve(args: string[] = []) {
    const server = await startServer({ args });
    servers.push(server);
    return server;
  }

  /** Publishes `{ n }` for `n` in `from..to` to lobby (`fetch`: one that trusts an https server). */
  async function publish(server: RunningServer, from: number, to: number, fetch?: typeof globalThis.fetch) {
    const admin = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch });
    for (let n = from; n < to; n++) await admin.publish({ channel: "lobby", payload: { n } });
  }

  /**
   * kill -9 and a restart mid-stream (same port, same data dir, same options: with `--dev-tls`
   * the certificate in the data dir is reused, so Chromium's pin of its key still holds): every
   * event exactly once, in order, on the same session. Returns what the page saw.
   */
  async function survivesKillAndRestart(first: RunningServer, trust: string[] = []) {
    let server = first;
    const fetch = trust.length ? await fetchWithCa(server.caCert) : undefined;
    const { browser, start, until, state } = await open(server.baseUrl, { trust, recordResponses: true });
    await start("a", "chn=lobby", { backoffCapMs: 500 });
    await until("a", `s.progress.state.kind === "live"`, "live");
    const sessionId = (await state("a")).progress.sessionId;
    await publish(server, 0, 30, fetch);
    await until("a", "s.events.length >= 10", "events before the kill");
    await server.kill();
    server = await restart(server);
    servers.push(server);
    await publish(server, 30, 60, fetch);
    await until("a", "s.events.length >= 60", "every event");
    await until("a", "s.progress.connections >= 2", "the reconnect");
    const s = await state("a");
    assert.deepEqual(s.events.map((e) => e.payload.n), Array.from({ length: 60 }, (_, i) => i));
    assert.equal(new Set(s.events.map((e) => e.id)).size, 60, "no event twice");
    assert.equal(s.progress.sessionId, sessionId, "the same session");
    assert.equal(s.error, undefined);
    return { browser, restarted: server, subscribes: await untilResponses(browser, server, "Subscribe", 2) };
  }

  /**
   * Typed calls of the chat contract from the page, as a subscription's session, and the
   * refusals with their codes. Returns what the page saw.
   */
  async function callsTypedMethods(chat: RunningServer, trust: string[] = []) {
    const { browser, page, start, until } = await open(chat.baseUrl, { trust, recordResponses: true });
    await start("bob", `chn=chat:1&rpc=routerClient,sendMessage&att=${encodeURIComponent('{"userId":"bob"}')}`);
    await until("bob", `s.progress.state.kind === "live"`, "live");
    const answers = await page.evaluate(() => window.harness.chat("bob", "hi from Chromium"));
    assert.deepEqual(answers, { echoed: "Echo: hi from Chromium", pong: "pong" });
    // Refusals reach the page with their codes (grpc-status readable across origins).
    const notAllowed = await page.evaluate(() => window.harness.invokeOutcome("bob", ["forbidden", "x"]));
    assert.match(notAllowed, /^code 7: /, "PERMISSION_DENIED");
    const unknown = await page.evaluate(() => window.harness.invokeOutcome("bob", ["routerClient", "nope"]));
    assert.match(unknown, /^code 5: /, "NOT_FOUND");
    // DevTools reports a response to Node on its own channel, which may trail the page's answer.
    const invokes = await untilResponses(browser, chat, "Invoke", 4);
    return { browser, subscribes: responsesTo(browser, chat, "Subscribe"), invokes };
  }

  /**
   * The chat demo (examples/chat/serve.mjs, its page on another origin) against `chat`: what
   * alice sends, bob's page shows. Returns bob's browser.
   */
  async function chatDemo(chat: RunningServer, trust: string[] = []) {
    const { startDemo } = (await import(pathToFileURL(join(PACKAGE_ROOT, "examples/chat/serve.mjs")).href)) as {
      startDemo: (o: object) => Promise<{ url: string; close: () => Promise<void> }>;
    };
    const demo = await startDemo({ listen: "127.0.0.1:0", serverUrl: chat.baseUrl, signingKey: SIGNING_KEY });
    try {
      const browser = await Browser.open(`${demo.url}?user=bob&room=test`, { ready: "#status.live", trust, recordResponses: true });
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
      return browser;
    } finally {
      await demo.close();
    }
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

  it("--cors-allow-origin: the page's origin gets through, a server allowing another origin is out of the page's reach", async () => {
    const origin = new URL(pages.url).origin;
    const allowing = await serve(["--cors-allow-origin", origin]);
    const elsewhere = await serve(["--cors-allow-origin", "http://app.invalid"]);
    const { page, start, until, state } = await open(allowing.baseUrl);
    await start("a", "chn=lobby");
    await until("a", `s.progress.state.kind === "live"`, "live with the page's origin allowed");
    await publish(allowing, 0, 1);
    await until("a", "s.events.length === 1", "the event");
    // The other server answers without Access-Control-Allow-Origin for this page: Chromium
    // withholds every answer, which the client reads as unreachable and keeps retrying.
    await page.evaluate((url) => window.harness.connect(url), elsewhere.baseUrl);
    await start("b", "chn=lobby", { backoffCapMs: 200 });
    await until("b", `s.progress.state.kind === "backingOff" && s.progress.state.retry >= 3`, "refused attempts");
    const b = await state("b");
    assert.equal(b.progress.connections, 0, "never connected");
    assert.equal(b.error, undefined, "not fatal: unreachable is retried");
    assert.equal((await state("a")).progress.connections, 1);
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
    const { subscribes } = await survivesKillAndRestart(await serve(["--heartbeat-seconds", "1"]));
    assert.deepEqual([...new Set(subscribes.map((r) => r.protocol))], ["http/1.1"], JSON.stringify(subscribes));
  });

  it("calls typed methods of the chat server", { skip: missingBinary(chatBin(), "DURABLE_ITERATOR_CHAT_BIN") }, async () => {
    const chat = await startChat();
    servers.push(chat);
    const { subscribes, invokes } = await callsTypedMethods(chat);
    assert.deepEqual([...new Set([...subscribes, ...invokes].map((r) => r.protocol))], ["http/1.1"], JSON.stringify({ subscribes, invokes }));
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
    await chatDemo(chat);
  });

  describe("over https (HTTP/2)", () => {
    // Browsers speak HTTP/2 only over TLS. The server makes its own certificate (`--dev-tls`);
    // Node trusts that file (`fetchWithCa`), Chromium its public key alone.
    const tlsSkip = missingTls();

    /** A `serve --dev-tls` server, and Node-side admin and raw RPC clients that trust it. */
    async function serveTls(args: string[] = []) {
      const server = await startServer({ tls: "dev", args });
      servers.push(server);
      const fetch = await fetchWithCa(server.caCert);
      const admin = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch });
      const rpc = createRpcClient(DurableIterator, createTransport({ baseUrl: server.baseUrl, fetch }));
      return { server, admin, rpc };
    }

    /** A chat example serving https (`DURABLE_ITERATOR_DEV_TLS=1`). */
    async function chatTls() {
      const chat = await startChat({ tls: true });
      servers.push(chat);
      return chat;
    }

    const chatTlsSkip = missingChatTls();

    /** Every response in `seen` came over HTTP/2, with status 200, and there is at least one. */
    function allHttp2(seen: SeenResponse[], what: string) {
      assert.ok(seen.length >= 1, `${what}: none seen`);
      assert.deepEqual([...new Set(seen.map((r) => r.protocol))], ["h2"], `${what}: ${JSON.stringify(seen)}`);
      assert.ok(seen.every((r) => r.status === 200), `${what}: ${JSON.stringify(seen)}`);
    }

    it("ten subscriptions on one page, each receiving every event", { skip: tlsSkip }, async () => {
      const { server, admin } = await serveTls();
      const { browser, start, until, state } = await open(server.baseUrl, { trust: [server.caCert], recordResponses: true });
      const names = Array.from({ length: 10 }, (_, i) => `s${i}`);
      for (const name of names) await start(name, "chn=lobby");
      for (const name of names) await until(name, `s.progress.state.kind === "live"`, `${name} live`);
      for (let n = 0; n < 5; n++) await admin.publish({ channel: "lobby", payload: { n } });
      for (const name of names) {
        await until(name, "s.events.length >= 5", `${name}'s events`);
        assert.deepEqual((await state(name)).events.map((e) => e.payload.n), [0, 1, 2, 3, 4]);
      }
      // Chromium's own account of the ten streams (DevTools): HTTP/2, all on one connection.
      // (Over HTTP/1.1 it holds six streams per host at most: the seventh would never go live.)
      const seen = responsesTo(browser, server, "Subscribe");
      assert.equal(seen.length, 10, JSON.stringify(seen));
      assert.deepEqual([...new Set(seen.map((r) => r.protocol))], ["h2"], JSON.stringify(seen));
      assert.equal(new Set(seen.map((r) => r.connectionId)).size, 1, `one connection for all ten: ${JSON.stringify(seen)}`);
      assert.ok(seen.every((r) => r.status === 200));
    });

    it("refreshes a short-lived token in place: refreshes grow on one connection, events keep coming past its expiry", { skip: tlsSkip }, async () => {
      const { server, admin } = await serveTls();
      const { browser, start, until, state } = await open(server.baseUrl, { trust: [server.caCert], recordResponses: true });
      const tokensBefore = pages.tokensIssued;
      // Tokens of 6 s, refreshed 4 s before they expire. The server ends a stream whose token
      // has expired (the Node test "at expiry without refresh" sees the reconnect): a stream
      // still the first one a second after the first token's expiry, and still delivering,
      // lives on the tokens swapped in by RefreshToken. (The server sends TokenExpiring 30 s
      // before expiry, so with tokens this short it asks again at once after each refresh; the
      // client refreshes about once a second then, never faster: a token of the same second
      // expires no later and counts as a failed refresh.)
      await start("r", "chn=lobby&ttl=6", { refreshBeforeExpirySeconds: 4 });
      await until("r", `s.progress.state.kind === "live"`, "live");
      const first = await state("r");
      const firstExpiry = unverifiedClaims(first.credentials.token)?.exp;
      assert.ok(firstExpiry !== undefined, `a token the client can read: ${first.credentials.token}`);
      assert.ok(firstExpiry * 1000 - Date.now() <= 6_000, "a short-lived token");
      await admin.publish({ channel: "lobby", payload: { n: 0 } });
      await until("r", "s.events.length >= 1 && s.progress.refreshes >= 1", "an event, and a first refresh");
      await admin.publish({ channel: "lobby", payload: { n: 1 } });
      await until("r", `s.progress.refreshes >= 3 && Date.now() >= ${(firstExpiry + 1) * 1000}`, "more refreshes, past the first token's expiry");
      for (let n = 2; n < 5; n++) await admin.publish({ channel: "lobby", payload: { n } });
      await until("r", "s.events.length >= 5", "every event");
      const s = await state("r");
      assert.deepEqual(s.events.map((e) => e.payload.n), [0, 1, 2, 3, 4]);
      assert.equal(s.progress.connections, 1, "the same stream throughout");
      assert.ok(s.progress.refreshes >= 3, `refreshes: ${s.progress.refreshes}`);
      assert.equal(s.progress.state.kind, "live");
      assert.equal(s.error, undefined);
      assert.deepEqual(s.reports, []);
      assert.ok(unverifiedClaims(s.credentials.token)!.exp > firstExpiry, "the stream now runs on a later token");
      assert.equal(s.credentials.sessionTicket, first.credentials.sessionTicket, "the same session");
      assert.ok(pages.tokensIssued - tokensBefore >= 1 + s.progress.refreshes, "every token from the page's origin");
      // One Subscribe in all (the refreshes are RefreshToken calls beside it), over HTTP/2.
      const seen = responsesTo(browser, server, "Subscribe");
      assert.equal(seen.length, 1, JSON.stringify(seen));
      assert.equal(seen[0]!.protocol, "h2");
    });

    it("abort closes the streams as the server sees it, over HTTP/2: their sessions stop being live there, the connection stays", { skip: tlsSkip }, async () => {
      // Over HTTP/2 every stream of the page shares one connection, so the HTTP/1.1 proof (six
      // more open only once six closed) says nothing here. What does: the server's registry of
      // live sessions. RefreshToken with a session's ticket swaps its token while a stream of
      // that session is open on the server, and is refused as FAILED_PRECONDITION ("session is
      // not connected") once the server has dropped the stream (its registration goes with it).
      // A browser that kept the aborted streams open (no RST_STREAM) would leave them live, and
      // the bounded wait below would fail. A stream not aborted stays live and delivering on the
      // same connection: abort closed streams, not the connection.
      const { server, admin, rpc } = await serveTls();
      const { browser, page, start, until, state } = await open(server.baseUrl, { trust: [server.caCert], recordResponses: true });
      const names = ["a", "b", "c", "d", "e", "f"];
      for (const name of [...names, "keep"]) await start(name, "chn=lobby");
      for (const name of [...names, "keep"]) await until(name, `s.progress.state.kind === "live"`, `${name} live`);
      const tickets = new Map<string, string>();
      for (const name of [...names, "keep"]) {
        const ticket = (await state(name)).credentials.sessionTicket;
        assert.ok(ticket, `${name}'s session ticket`);
        tickets.set(name, ticket);
      }
      // The probe sees the open streams: every session is live on the server.
      for (const [name, ticket] of tickets) assert.equal(await liveOnServer(rpc, ticket), true, `${name} live on the server`);
      for (const name of names) await page.evaluate((n) => window.harness.abort(n), name);
      for (const name of names) {
        await until(name, `s.done && s.progress.state.kind === "closed"`, `${name} closed`);
        assert.equal((await state(name)).error, undefined, "closed, not failed");
      }
      for (const name of names) await untilNotLive(rpc, tickets.get(name)!, name);
      assert.equal(await liveOnServer(rpc, tickets.get("keep")!), true, "the stream not aborted is still live on the server");
      await admin.publish({ channel: "lobby", payload: { n: 0 } });
      await until("keep", "s.events.length === 1", "keep's event");
      assert.equal((await state("keep")).progress.connections, 1, "keep's stream was never cut");
      await start("again", "chn=lobby");
      await until("again", `s.progress.state.kind === "live"`, "a new stream after the aborts");
      const seen = responsesTo(browser, server, "Subscribe");
      assert.equal(seen.length, 8, JSON.stringify(seen));
      assert.deepEqual([...new Set(seen.map((r) => r.protocol))], ["h2"], JSON.stringify(seen));
      assert.equal(new Set(seen.map((r) => r.connectionId)).size, 1, `one connection before and after the aborts: ${JSON.stringify(seen)}`);
    });

    it("survives kill -9 and a restart mid-stream with --dev-tls: every event exactly once, in order, the certificate reused", { skip: tlsSkip }, async () => {
      const { server } = await serveTls(["--heartbeat-seconds", "1"]);
      const certificate = server.devCertificate!;
      const { restarted, subscribes } = await survivesKillAndRestart(server, [server.caCert]);
      // The restarted server took the certificate from the data dir rather than making one:
      // the page trusts only the first one's key, and reconnected.
      assert.deepEqual(restarted.devCertificate, certificate, "the same certificate after the restart");
      allHttp2(subscribes, "the Subscribe responses");
      assert.ok(subscribes.length >= 2, `a stream before and after the restart: ${JSON.stringify(subscribes)}`);
      assert.ok(new Set(subscribes.map((r) => r.connectionId)).size >= 2, `a new connection to the restarted server: ${JSON.stringify(subscribes)}`);
    });

    it("calls typed methods of the chat server over https", { skip: chatTlsSkip }, async () => {
      const chat = await chatTls();
      assert.match(chat.baseUrl, /^https:/);
      const { subscribes, invokes } = await callsTypedMethods(chat, [chat.caCert]);
      // Chromium's account (DevTools): the stream and the four calls (echo, ping, and the two
      // refused) over HTTP/2, all on the one connection.
      allHttp2(subscribes, "the Subscribe responses");
      assert.equal(subscribes.length, 1, JSON.stringify(subscribes));
      allHttp2(invokes, "the Invoke responses");
      assert.equal(invokes.length, 4, JSON.stringify(invokes));
      const all = [...subscribes, ...invokes];
      assert.equal(new Set(all.map((r) => r.connectionId)).size, 1, `one connection for the stream and the calls: ${JSON.stringify(all)}`);
    });

    it("the chat demo over https: what alice sends, bob's page shows", { skip: chatTlsSkip }, async () => {
      const chat = await chatTls();
      const browser = await chatDemo(chat, [chat.caCert]);
      allHttp2(responsesTo(browser, chat, "Subscribe"), "bob's Subscribe responses");
    });
  });
});

/** The responses Chromium received from `server` to `method` of DurableIterator (preflights left out). */
function responsesTo(browser: Browser, server: RunningServer, method: "Subscribe" | "Invoke"): SeenResponse[] {
  return browser.responses.filter((r) => r.type !== "Preflight" && r.url === `${server.baseUrl}/durable_iterator.v1.DurableIterator/${method}`);
}

/**
 * The responses to `method` from `server`, once Chromium has reported at least `count` of them
 * (bounded, 10 s; the DevTools events reach Node on their own channel, which may trail the
 * page's own answer).
 */
async function untilResponses(browser: Browser, server: RunningServer, method: "Subscribe" | "Invoke", count: number): Promise<SeenResponse[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const seen = responsesTo(browser, server, method);
    if (seen.length >= count) return seen;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after 10000 ms waiting for Chromium to report ${count} ${method} responses: ${JSON.stringify(seen)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Whether a stream of the session `ticket` names is open on the server, asked with
 * RefreshToken (a fresh token for the same channel and tags): accepted while it is,
 * FAILED_PRECONDITION "session is not connected" once it is not.
 */
async function liveOnServer(rpc: RpcClient<typeof DurableIterator>, ticket: string): Promise<boolean> {
  const now = Math.floor(Date.now() / 1000);
  const token = signToken(SIGNING_KEY, { chn: "lobby", iat: now, exp: now + 3600 });
  try {
    await rpc.refreshToken({ sessionTicket: ticket, token });
    return true;
  } catch (error) {
    const status = StatusError.from(error);
    if (status.code === Code.FailedPrecondition && /not connected/.test(status.rawMessage)) return false;
    throw status;
  }
}

/** Waits (bounded, 10 s) until the server no longer has a stream of the session `ticket` names. */
async function untilNotLive(rpc: RpcClient<typeof DurableIterator>, ticket: string, name: string): Promise<void> {
  await bounded(
    (async () => {
      while (await liveOnServer(rpc, ticket)) await new Promise((resolve) => setTimeout(resolve, 50));
    })(),
    10_000,
    `the server to drop ${name}'s aborted stream (its session still live there)`,
  );
}
