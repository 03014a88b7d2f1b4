/**
 * The client in Node against the real server binary (DURABLE_ITERATOR_BIN), one fresh server
 * per test on 127.0.0.1:0, killed by pid at the end. Every wait is bounded; nothing asserts
 * how long anything took.
 */
import assert from "node:assert/strict";
import { after, afterEach, describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { createAdmin, type Admin } from "../../src/admin.js";
import { createClient } from "../../src/client.js";
import { RetriesExhaustedError, StatusError } from "../../src/errors.js";
import type { Event } from "../../src/items.js";
import { signingProvider, signToken } from "../../src/sign.js";
import { fixedToken } from "../../src/token.js";
import { Reader, untilProgress } from "../helpers/reader.js";
import {
  API_KEY,
  bounded,
  missingBinary,
  restart,
  serverBin,
  SIGNING_KEY,
  startServer,
  type RunningServer,
} from "../helpers/server.js";

const skip = missingBinary(serverBin(), "DURABLE_ITERATOR_BIN");

/** Servers started by the running test, killed after it whatever happened. */
const running: RunningServer[] = [];
async function serve(args: string[] = []): Promise<RunningServer> {
  const server = await startServer({ args });
  running.push(server);
  return server;
}
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});
after(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

function tokens(channel: string, options: { ttlSeconds?: number; tags?: string[]; rpc?: string[] } = {}) {
  return signingProvider({ signingKey: SIGNING_KEY, channel, ...options });
}

function admin(server: RunningServer): Admin {
  return createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY });
}

async function publishMany(admin: Admin, channel: string, from: number, to: number, pad = 0, size = 100): Promise<string[]> {
  const ids: string[] = [];
  for (let start = from; start < to; start += size) {
    const batch = [];
    for (let n = start; n < Math.min(to, start + size); n++) batch.push({ channel, payload: { n, pad: "x".repeat(pad) } });
    ids.push(...(await admin.publishBatch(batch)));
  }
  return ids;
}

function numbers(events: Event[]): number[] {
  return events.map((e) => (e.payload as { n: number }).n);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

describe("against the server", { skip }, () => {
  it("subscribes and receives published events in order, JSON intact", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby") });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    const payloads = [{ text: "hello", n: 1, big: 9007199254740991, neg: -3, f: 2.5 }, [1, "two", null, true], "plain", 42, null];
    const ids: string[] = [];
    for (const payload of payloads) ids.push(await admin(server).publish({ channel: "lobby", payload }));
    await reader.untilEvents(payloads.length);
    assert.deepEqual(reader.events.map((e) => e.id), ids);
    assert.deepEqual(reader.events.map((e) => e.payload), payloads);
    assert.ok(Number.isInteger((reader.events[0]!.payload as { n: number }).n));
    assert.ok(reader.events.every((e) => e.publishedAtMs > 1_700_000_000_000));
    assert.equal(sub.progress.connections, 1);
    assert.ok(sub.sessionId);
    await sub.return();
    await bounded(reader.finished, 5_000, "the reader to finish");
    assert.equal(reader.error, undefined);
  });

  it("delivers by tags, targets and exclude", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const red = client.subscribe({ getToken: tokens("room", { tags: ["red"] }) });
    const blue = client.subscribe({ getToken: tokens("room", { tags: ["blue"] }) });
    const [r, b] = [new Reader(red), new Reader(blue)];
    await untilProgress(red, () => red.progress.state.kind === "live", "red live");
    await untilProgress(blue, () => blue.progress.state.kind === "live", "blue live");
    const a = admin(server);
    await a.publish({ channel: "room", payload: { n: 0 }, tags: ["red"] });
    await a.publish({ channel: "room", payload: { n: 1 }, targets: [blue.sessionId!] });
    await a.publish({ channel: "room", payload: { n: 2 }, exclude: [blue.sessionId!] });
    await a.publish({ channel: "room", payload: { n: 3 }, tags: [] });
    await a.publish({ channel: "room", payload: { n: 4 } });
    await r.untilEvents(3);
    await b.untilEvents(2);
    assert.deepEqual(numbers(r.events), [0, 2, 4]);
    assert.deepEqual(numbers(b.events), [1, 4]);
    red.close();
    blue.close();
  });

  it("resumes after the last id with the session ticket: nothing lost, same session", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const a = admin(server);
    const first = client.subscribe({ getToken: tokens("lobby") });
    const r1 = new Reader(first);
    await untilProgress(first, () => first.progress.state.kind === "live", "live");
    await publishMany(a, "lobby", 0, 3);
    await r1.untilEvents(3);
    const { sessionTicket } = first.credentials;
    const sessionId = first.sessionId;
    await first.return();
    await publishMany(a, "lobby", 3, 6);
    const second = client.subscribe({
      getToken: tokens("lobby"),
      lastEventId: r1.events[2]!.id,
      sessionTicket,
    });
    const r2 = new Reader(second);
    await r2.untilEvents(3);
    assert.deepEqual(numbers(r2.events), [3, 4, 5]);
    assert.equal(second.sessionId, sessionId);
    assert.equal(r2.items.filter((i) => i.kind === "resumed").length, 0, "recovered: no report");
    second.close();
  });

  it("reports a resume from an id of another store history, and goes on from the position", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const a = admin(server);
    const [known] = await publishMany(a, "lobby", 0, 1);
    const epoch = known!.split("-")[0]!;
    const foreign = `${epoch === "00000000" ? "11111111" : "00000000"}-0000000000000001`;
    const sub = client.subscribe({ getToken: tokens("lobby"), lastEventId: foreign });
    const reader = new Reader(sub);
    await reader.until(() => reader.items.length >= 1, "the resume report");
    const report = reader.items[0]!;
    assert.equal(report.kind, "resumed");
    assert.equal(report.kind === "resumed" && report.failure, "store_reset");
    assert.equal(report.kind === "resumed" && report.lastEventId, foreign);
    await publishMany(a, "lobby", 1, 2);
    await reader.untilEvents(1);
    assert.deepEqual(numbers(reader.events), [1]);
    sub.close();
  });

  it("refreshes the token in place on the live stream", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    // Tokens of 40 s refreshed 38 s before they expire: the first refresh comes after ~2 s.
    const sub = client.subscribe({ getToken: tokens("lobby", { ttlSeconds: 40 }), refreshBeforeExpirySeconds: 38 });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    const before = sub.credentials.token;
    await untilProgress(sub, () => sub.progress.refreshes >= 1, "a refresh in place");
    assert.notEqual(sub.credentials.token, before);
    assert.equal(sub.progress.connections, 1, "the same stream");
    await publishMany(admin(server), "lobby", 0, 2);
    await reader.untilEvents(2);
    assert.equal(sub.progress.connections, 1);
    sub.close();
  });

  it("at expiry without refresh: renews the token and reconnects, keeping the session and every event", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby", { ttlSeconds: 2 }) });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    const sessionId = sub.sessionId;
    await publishMany(admin(server), "lobby", 0, 2);
    await untilProgress(sub, () => sub.progress.connections >= 2, "a reconnect with a new token");
    await publishMany(admin(server), "lobby", 2, 4);
    await reader.untilEvents(4);
    assert.deepEqual(numbers(reader.events), [0, 1, 2, 3]);
    assert.equal(sub.sessionId, sessionId);
    sub.close();
  });

  it("at expiry of a fixed token: fails with UNAUTHENTICATED instead of looping", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const now = Math.floor(Date.now() / 1000);
    const token = signToken(SIGNING_KEY, { chn: "lobby", iat: now, exp: now + 2 });
    const sub = client.subscribe({ getToken: fixedToken(token) });
    const reader = new Reader(sub);
    await bounded(reader.finished, 20_000, "the subscription to fail");
    assert.ok(reader.error instanceof StatusError, String(reader.error));
    assert.equal(reader.error.code, Code.Unauthenticated);
    assert.equal(sub.progress.connections, 1);
  });

  it("a slow consumer is cut by the server and resumes with nothing lost or repeated", async () => {
    const server = await serve(["--subscriber-queue", "8"]);
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby") });
    const first = sub.next();
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    await publishMany(admin(server), "lobby", 0, 1);
    const seen: number[] = [];
    const item = await bounded(first, 10_000, "the first event");
    if (item.value?.kind === "event") seen.push((item.value.payload as { n: number }).n);
    // Nothing is being read now (the subscription reads only while next() waits): the server's
    // queue for this session fills while the events pile up, and it ends the stream.
    // 24 MB in all: more than the socket buffers and the queue of 8 hold.
    const total = 1_500;
    await publishMany(admin(server), "lobby", 1, total, 16_000, 50);
    while (seen.length < total) {
      const next = await bounded(sub.next(), 20_000, `event ${seen.length}`);
      assert.equal(next.done, false);
      if (next.value!.kind === "event") seen.push((next.value!.payload as { n: number }).n);
    }
    assert.deepEqual(seen, range(0, total));
    assert.ok(sub.progress.connections >= 2, `cut as a slow consumer and resumed (connections ${sub.progress.connections})`);
    sub.close();
  });

  it("survives kill -9 and a restart on the same port and data: every event exactly once, in order", async () => {
    let server = await serve(["--heartbeat-seconds", "1"]);
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby"), backoff: { baseMs: 100, capMs: 500 } });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    const sessionId = sub.sessionId;
    await publishMany(admin(server), "lobby", 0, 50);
    await reader.untilEvents(20);
    await server.kill();
    server = await restart(server);
    running.push(server);
    await publishMany(admin(server), "lobby", 50, 100);
    await reader.untilEvents(100);
    await untilProgress(sub, () => sub.progress.connections >= 2, "the reconnect");
    assert.deepEqual(numbers(reader.events), range(0, 100));
    assert.equal(new Set(reader.events.map((e) => e.id)).size, 100, "no id twice");
    assert.equal(sub.sessionId, sessionId, "the session survived the restart");
    sub.close();
  });

  it("declares a frozen stream dead after 2.5 heartbeats and reconnects", async () => {
    const server = await serve(["--heartbeat-seconds", "1"]);
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby"), handshakeTimeoutMs: 60_000 });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    // A server that stops answering without closing anything: only liveness can notice.
    process.kill(server.child.pid!, "SIGSTOP");
    try {
      await untilProgress(sub, () => sub.progress.state.kind !== "live", "the stream declared dead");
    } finally {
      process.kill(server.child.pid!, "SIGCONT");
    }
    await untilProgress(sub, () => sub.progress.connections >= 2, "the reconnect");
    await publishMany(admin(server), "lobby", 0, 1);
    await reader.untilEvents(1);
    sub.close();
  });

  it("ends with a typed error on a fatal code: INVALID_ARGUMENT for a malformed id", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby"), lastEventId: "not-an-id" });
    const reader = new Reader(sub);
    await bounded(reader.finished, 10_000, "the failure");
    assert.ok(reader.error instanceof StatusError, String(reader.error));
    assert.equal(reader.error.code, Code.InvalidArgument);
    assert.equal(sub.progress.state.kind, "closed");
  });

  it("ends with ABORTED when another stream takes the session over", async () => {
    const server = await serve();
    const client = createClient({ baseUrl: server.baseUrl });
    const first = client.subscribe({ getToken: tokens("lobby") });
    const r1 = new Reader(first);
    await untilProgress(first, () => first.progress.state.kind === "live", "live");
    const second = client.subscribe({ getToken: tokens("lobby"), sessionTicket: first.credentials.sessionTicket });
    const r2 = new Reader(second);
    await bounded(r1.finished, 10_000, "the first subscription to end");
    assert.ok(r1.error instanceof StatusError, String(r1.error));
    assert.equal(r1.error.code, Code.Aborted);
    await untilProgress(second, () => second.progress.state.kind === "live", "the second live");
    assert.equal(second.sessionId, first.sessionId);
    second.close();
    await bounded(r2.finished, 5_000, "the second to close");
  });

  it("gives up after maxAttempts when nothing listens", async () => {
    const server = await serve();
    const baseUrl = server.baseUrl;
    await server.kill();
    const client = createClient({ baseUrl });
    const sub = client.subscribe({ getToken: tokens("lobby"), backoff: { baseMs: 10, capMs: 20, maxAttempts: 3 } });
    const reader = new Reader(sub);
    await bounded(reader.finished, 10_000, "the failure");
    assert.ok(reader.error instanceof RetriesExhaustedError, String(reader.error));
    assert.equal(reader.error.attempts, 3);
    assert.equal(reader.error.code, Code.Unavailable);
  });

  it("admin: publishBatch, issueToken, and a wrong API key", async () => {
    const server = await serve();
    const a = admin(server);
    const issued = await a.issueToken({ channel: "lobby", tags: ["x"], ttlSeconds: 60, att: { userId: "u" } });
    assert.ok(issued.expiresAt > Date.now() / 1000);
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: fixedToken(issued.token) });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    const ids = await a.publishBatch([
      { channel: "lobby", payload: 1 },
      { channel: "lobby", payload: 2, tags: ["x"] },
    ]);
    assert.equal(ids.length, 2);
    await reader.untilEvents(2);
    assert.deepEqual(reader.events.map((e) => e.id), ids);
    const wrong = createAdmin({ baseUrl: server.baseUrl, apiKey: "wrong" });
    await assert.rejects(wrong.publish({ channel: "lobby", payload: 1 }), (e: unknown) => e instanceof StatusError && e.code === Code.Unauthenticated);
    await assert.rejects(a.publish({ channel: "", payload: 1 }), (e: unknown) => e instanceof StatusError && e.code === Code.InvalidArgument);
    sub.close();
  });
});
