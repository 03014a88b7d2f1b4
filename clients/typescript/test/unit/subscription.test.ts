/**
 * The state machine, against a fake server (the real Connect client over an in-memory
 * transport) and a manual clock: no network, no sleeps, no timing thresholds. Time moves only
 * when a test moves it, and waits are counted in turns of the event loop.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { createClient } from "../../src/client.js";
import { ManualClock, SystemClock } from "../../src/clock.js";
import { decode, method } from "../../src/contract.js";
import { DecodeError, EncodeError, RetriesExhaustedError, StatusError, TokenProviderError } from "../../src/errors.js";
import { ResumeFailure } from "../../src/gen/durable_iterator/v1/durable_iterator_pb.js";
import type { SubscriptionItem } from "../../src/items.js";
import { codeName } from "../../src/policy.js";
import type { SubscribeOptions, Subscription } from "../../src/subscription.js";
import { FakeServer, invokeAnswer, refreshAnswer, type SubscribeCall } from "../helpers/fake-server.js";
import { settle, tick, until } from "../helpers/wait.js";
import { DISPOSITIONS } from "../helpers/dispositions.js";

const T0 = 1_764_000_000_000;
const T0_SECS = T0 / 1000;

/** An unsigned token of the right shape (the fake server reads nothing of it). */
function token(n: number, options: { chn?: string; tags?: string[]; exp?: number } = {}): string {
  const claims: Record<string, unknown> = { chn: options.chn ?? "room" };
  if (options.tags) claims.tags = options.tags;
  claims.iat = T0_SECS + n;
  claims.exp = options.exp ?? T0_SECS + 3_600;
  return `${JSON.stringify(claims)}.sig-${n}`;
}

/** A token provider the test scripts: each call takes the next answer, else mints token(n). */
class Provider {
  readonly signals: AbortSignal[] = [];
  readonly answers: Array<(signal: AbortSignal) => string | Promise<string>> = [];
  readonly issued: string[] = [];

  get calls(): number {
    return this.signals.length;
  }

  readonly getToken = ({ signal }: { signal: AbortSignal }): Promise<string> => {
    this.signals.push(signal);
    const answer = this.answers.shift() ?? (() => token(this.calls));
    return Promise.resolve(answer(signal)).then((t) => {
      this.issued.push(t);
      return t;
    });
  };

  /** The next call hangs until the subscription aborts it (a well-behaved provider). */
  hangNext(): void {
    this.answers.push(
      (signal) =>
        new Promise<string>((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")))),
    );
  }
}

function harness(options: Partial<SubscribeOptions> = {}) {
  const server = new FakeServer();
  const clock = new ManualClock(T0);
  const client = createClient({ transport: server.transport, clock });
  const provider = new Provider();
  const sub = client.subscribe({ getToken: provider.getToken, random: () => 0.5, ...options });
  const call = (n: number): Promise<SubscribeCall> => settle(server.subscribe(n), `Subscribe call #${n}`);
  return { server, clock, client, provider, sub, call };
}

async function item(promise: Promise<IteratorResult<SubscriptionItem>>): Promise<SubscriptionItem> {
  const result = await settle(promise, "the next item");
  assert.equal(result.done, false, "an item, not the end");
  return result.value as SubscriptionItem;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await settle(promise, "the rejection");
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

/** Some turns of the event loop, to show that something does not happen. */
async function turns(n = 50): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

function state(sub: Subscription): string {
  return sub.progress.state.kind;
}

describe("subscription: connecting and reading", () => {
  it("gets a token, subscribes, and yields events with the session's progress", async () => {
    const { sub, call, provider } = harness({ lastEventId: "e-0", sessionTicket: "old-ticket" });
    const progress: string[] = [];
    sub.onProgress((p) => progress.push(`${p.state.kind}:${p.connections}`));
    const first = sub.next();
    const c0 = await call(0);
    assert.equal(c0.request.token, provider.issued[0]);
    assert.equal(c0.request.lastEventId, "e-0");
    assert.equal(c0.request.sessionTicket, "old-ticket");
    c0.subscribed({ sessionId: "s-1", sessionTicket: "t-1" }).event("e-1", { n: 1, f: 1.5 }, 42);
    assert.deepEqual(await item(first), { kind: "event", id: "e-1", payload: { n: 1, f: 1.5 }, publishedAtMs: 42 });
    assert.deepEqual(sub.progress, { state: { kind: "live" }, connections: 1, refreshes: 0, sessionId: "s-1" });
    assert.equal(sub.sessionId, "s-1");
    assert.deepEqual(sub.credentials, { token: provider.issued[0], sessionTicket: "t-1" });
    assert.deepEqual(progress, ["fetchingToken:0", "connecting:0", "live:1"]);
    c0.event("e-2", "two");
    assert.equal(((await item(sub.next())) as { payload: unknown }).payload, "two");
    await sub.return();
    assert.equal(state(sub), "closed");
    assert.deepEqual(await sub.next(), { done: true, value: undefined });
  });

  it("sends nothing until the first next()", async () => {
    const { sub, server, provider } = harness();
    await turns();
    assert.equal(provider.calls, 0);
    assert.equal(server.subscribes.count, 0);
    sub.close();
  });

  it("works with for await, and break closes the stream", async () => {
    const { sub, call } = harness();
    const seen: string[] = [];
    const loop = (async () => {
      for await (const it of sub) {
        if (it.kind === "event") seen.push(it.id);
        if (seen.length === 2) break;
      }
    })();
    const c0 = await call(0);
    c0.subscribed().event("e-1").event("e-2").event("e-3");
    await settle(loop, "the loop");
    assert.deepEqual(seen, ["e-1", "e-2"]);
    await until(() => c0.closed, "the stream to close");
    assert.equal(state(sub), "closed");
  });

  it("ends the attempt as INTERNAL when the first message is not Subscribed, and reconnects", async () => {
    const { sub, call } = harness();
    const next = sub.next();
    const c0 = await call(0);
    c0.heartbeat();
    const c1 = await call(1);
    assert.ok(c0.closed);
    c1.subscribed().event("e-1");
    assert.equal(((await item(next)) as { id: string }).id, "e-1");
    sub.close();
  });

  it("gives up waiting for Subscribed after the handshake timeout", async () => {
    const { sub, call, clock } = harness({ handshakeTimeoutMs: 5_000 });
    const next = sub.next();
    const c0 = await call(0);
    await until(() => clock.deadlines().includes(T0 + 5_000), "the handshake deadline");
    clock.advance(4_999);
    await turns();
    assert.equal(c0.closed, false);
    clock.advance(1);
    const c1 = await call(1);
    assert.ok(c0.closed);
    sub.close();
    assert.deepEqual(await settle(next, "done"), { done: true, value: undefined });
    assert.ok(c1);
  });
});

describe("subscription: backoff", () => {
  it("retries at once, then on the full-jitter schedule (a table)", async () => {
    // random() = 0.5: half of each ceiling. [retry, wait ms]
    const table: Array<[number, number]> = [
      [1, 0],
      [2, 500],
      [3, 1_000],
      [4, 2_000],
      [5, 4_000],
      [6, 5_000],
      [7, 5_000],
    ];
    const { sub, call, clock } = harness();
    const next = sub.next();
    let c = await call(0);
    for (const [retry, wait] of table) {
      c.end(Code.Unavailable);
      if (wait > 0) {
        await until(() => state(sub) === "backingOff", `backing off before retry ${retry}`);
        assert.deepEqual(sub.progress.state, { kind: "backingOff", retry, untilMs: clock.nowMs() + wait });
        clock.advance(wait - 1);
        await turns();
        assert.equal(sub.progress.state.kind, "backingOff", `still waiting before retry ${retry}`);
        clock.advance(1);
      }
      c = await call(retry);
      await until(() => state(sub) === "connecting", "connecting");
      assert.deepEqual(sub.progress.state, { kind: "connecting", retry });
    }
    sub.close();
    await settle(next, "done");
  });

  it("starts over once the stream proved itself (an event or a heartbeat), not on Subscribed alone", async () => {
    const { sub, call } = harness();
    const next = sub.next();
    const c0 = await call(0);
    c0.end(Code.Unavailable); // retry 1, at once
    const c1 = await call(1);
    c1.subscribed(); // not proof
    await until(() => state(sub) === "live", "live");
    c1.end(Code.Unavailable); // retry 2: backs off
    await until(() => state(sub) === "backingOff", "backing off");
    assert.equal((sub.progress.state as { retry: number }).retry, 2);
    sub.close();
    await settle(next, "done");

    const h = harness();
    const n2 = h.sub.next();
    const d0 = await h.call(0);
    d0.end(Code.Unavailable);
    const d1 = await h.call(1);
    d1.subscribed().heartbeat(); // proof: the count starts over
    await until(() => d1.closed === false && h.sub.progress.connections === 1, "live");
    await turns();
    d1.end(Code.Unavailable);
    const d2 = await h.call(2); // retry 1 again: at once, no backoff
    assert.ok(d2);
    h.sub.close();
    await settle(n2, "done");
  });

  it("fails with RetriesExhausted and the last status after maxAttempts", async () => {
    const { sub, call, clock } = harness({ backoff: { maxAttempts: 2 } });
    const next = sub.next();
    (await call(0)).end(Code.Unavailable, "down 0");
    (await call(1)).end(Code.Unavailable, "down 1");
    await until(() => state(sub) === "backingOff", "backing off");
    clock.advance(10_000);
    (await call(2)).end(Code.ResourceExhausted, "slow");
    const error = await rejection(next);
    assert.ok(error instanceof RetriesExhaustedError);
    assert.equal(error.attempts, 2);
    assert.equal(error.code, Code.ResourceExhausted);
    assert.equal(error.last.rawMessage, "slow");
    assert.equal(state(sub), "closed");
    assert.equal(clock.pendingSleeps, 0);
  });
});

describe("subscription: dispositions", () => {
  for (const [code, disposition] of DISPOSITIONS) {
    it(`${codeName(code)} ending a live stream: ${disposition}`, async () => {
      const { sub, call, provider } = harness();
      const first = sub.next();
      const c0 = await call(0);
      c0.subscribed({ sessionTicket: "t-1" }).event("e-1");
      await item(first);
      const next = sub.next();
      c0.end(code === 0 ? undefined : code, "the end");
      if (disposition === "fail") {
        const error = await rejection(next);
        assert.ok(error instanceof StatusError, String(error));
        assert.equal(error.code, code);
        assert.equal(error.rawMessage, "the end");
        assert.equal(state(sub), "closed");
        assert.deepEqual(await sub.next(), { done: true, value: undefined });
        return;
      }
      const c1 = await call(1);
      assert.equal(c1.request.lastEventId, "e-1");
      assert.equal(c1.request.sessionTicket, "t-1");
      if (disposition === "reconnect") {
        assert.equal(provider.calls, 1, "the same token");
        assert.equal(c1.request.token, provider.issued[0]);
      } else {
        assert.equal(provider.calls, 2, "a new token");
        assert.equal(c1.request.token, provider.issued[1]);
      }
      sub.close();
      await settle(next, "done");
    });

    it(`${codeName(code)} refusing the first connect (a fresh token): ${disposition === "renewToken" ? "fail" : disposition}`, async () => {
      const { sub, call, provider } = harness();
      const next = sub.next();
      (await call(0)).end(code === 0 ? undefined : code, "refused");
      if (disposition === "reconnect") {
        const c1 = await call(1);
        assert.equal(c1.request.token, provider.issued[0]);
        sub.close();
        await settle(next, "done");
        return;
      }
      // RenewToken with a token straight from the provider fails: asking again would loop.
      const error = await rejection(next);
      assert.ok(error instanceof StatusError);
      assert.equal(error.code, code);
      assert.equal(provider.calls, 1);
    });
  }
});

describe("subscription: the tokenFresh rule", () => {
  it("renews a token that was refused after a failure of another kind cleared its freshness", async () => {
    const { sub, call, provider, clock } = harness();
    const next = sub.next();
    (await call(0)).end(Code.Unavailable); // the server was down: by now the token may have expired
    (await call(1)).end(Code.Unauthenticated); // not fresh any more: renew
    await until(() => state(sub) === "backingOff", "backing off before retry 2");
    clock.advance(500);
    const c2 = await call(2);
    assert.equal(provider.calls, 2);
    assert.equal(c2.request.token, provider.issued[1]);
    c2.end(Code.Unauthenticated); // the renewed token, fresh, refused at once: fatal
    const error = await rejection(next);
    assert.ok(error instanceof StatusError);
    assert.equal(error.code, Code.Unauthenticated);
    assert.equal(provider.calls, 2);
  });

  it("renews an accepted token the server later refuses, and keeps the session", async () => {
    const { sub, call, provider } = harness();
    const first = sub.next();
    const c0 = await call(0);
    c0.subscribed({ sessionTicket: "t-1", position: "p-3" });
    await until(() => state(sub) === "live", "live");
    c0.end(Code.Unauthenticated, "token expired");
    const c1 = await call(1);
    assert.equal(provider.calls, 2);
    assert.equal(c1.request.sessionTicket, "t-1");
    assert.equal(c1.request.lastEventId, "p-3");
    c1.subscribed().event("e-4");
    assert.equal(((await item(first)) as { id: string }).id, "e-4");
    sub.close();
  });
});

describe("subscription: where to resume", () => {
  it("resumes from Subscribed.position before any event, from the last event after", async () => {
    const { sub, call } = harness();
    const first = sub.next();
    const c0 = await call(0);
    assert.equal(c0.request.lastEventId, undefined);
    c0.subscribed({ position: "p-5" });
    await until(() => state(sub) === "live", "live");
    c0.end(Code.Unavailable);
    const c1 = await call(1);
    assert.equal(c1.request.lastEventId, "p-5", "no event yet: the position");
    c1.subscribed({ position: "p-9" }).event("e-6");
    await item(first);
    const next = sub.next();
    c1.end(Code.Unavailable);
    const c2 = await call(2);
    assert.equal(c2.request.lastEventId, "e-6", "the last event, not the newer position");
    sub.close();
    await settle(next, "done");
  });

  it("yields the resume report, and takes the position when the id was unusable and nothing replayed", async () => {
    const { sub, call } = harness({ lastEventId: "e-1" });
    const first = sub.next();
    const c0 = await call(0);
    c0.subscribed({
      sessionId: "s-1",
      position: "p-9",
      resume: { recovered: false, failure: ResumeFailure.TOO_OLD, replayed: 0, oldestRetainedId: "e-5" },
    });
    assert.deepEqual(await item(first), {
      kind: "resumed",
      lastEventId: "e-1",
      failure: "too_old",
      replayed: 0,
      oldestRetainedId: "e-5",
      sessionId: "s-1",
    });
    const next = sub.next();
    c0.end(Code.Unavailable);
    assert.equal((await call(1)).request.lastEventId, "p-9");
    sub.close();
    await settle(next, "done");
  });

  it("keeps the last id when the resume replays part of the history", async () => {
    const { sub, call } = harness({ lastEventId: "e-1" });
    const first = sub.next();
    const c0 = await call(0);
    c0.subscribed({ position: "p-9", resume: { recovered: false, failure: ResumeFailure.TOO_OLD, replayed: 2 } });
    assert.equal((await item(first)).kind, "resumed");
    const next = sub.next();
    c0.end(Code.Unavailable);
    assert.equal((await call(1)).request.lastEventId, "e-1");
    sub.close();
    await settle(next, "done");
  });

  it("reports nothing for a recovered resume and keeps the id", async () => {
    const { sub, call } = harness({ lastEventId: "e-1" });
    const next = sub.next();
    const c0 = await call(0);
    c0.subscribed({ position: "p-9", resume: { recovered: true, replayed: 0 } });
    await until(() => state(sub) === "live", "live");
    c0.end(Code.Unavailable);
    const c1 = await call(1);
    assert.equal(c1.request.lastEventId, "e-1");
    c1.subscribed().event("e-2");
    assert.equal((await item(next)).kind, "event");
    sub.close();
  });
});

describe("subscription: refresh", () => {
  const EXP = T0_SECS + 120;

  async function liveWithRefresh(tags?: string[]) {
    const h = harness({ refreshBeforeExpirySeconds: 60 });
    h.provider.answers.push(() => token(0, { exp: EXP, ...(tags ? { tags } : {}) }));
    const next = h.sub.next();
    const c0 = await h.call(0);
    c0.subscribed({ sessionTicket: "t-1", tokenExpiresAt: EXP, position: "p-1" });
    await until(() => state(h.sub) === "live", "live");
    return { ...h, next, c0 };
  }

  it("asks for a token refreshBeforeExpiry before exp and swaps it in place", async () => {
    const { sub, clock, provider, server, next, c0 } = await liveWithRefresh(["a", "b"]);
    const refreshAt = EXP * 1000 - 60_000;
    await until(() => clock.deadlines().includes(refreshAt), "the refresh deadline");
    clock.set(refreshAt - 1);
    await turns();
    assert.equal(provider.calls, 1);
    provider.answers.push(() => token(1, { exp: EXP + 60, tags: ["b", "a"] }));
    clock.set(refreshAt);
    const refresh = await settle(server.refreshes.nth(0), "RefreshToken");
    assert.equal(refresh.request.sessionTicket, "t-1");
    assert.equal(refresh.request.token, provider.issued[1]);
    refresh.answer(refreshAnswer(EXP + 60));
    await until(() => sub.progress.refreshes === 1, "the refresh");
    assert.equal(sub.credentials.token, provider.issued[1]);
    assert.equal(c0.closed, false, "the same stream");
    // The next deadline comes from the new expiry.
    await until(() => clock.deadlines().includes((EXP + 60) * 1000 - 60_000), "the next refresh deadline");
    sub.close();
    await settle(next, "done");
  });

  it("starts a due refresh before handing out events that are waiting", async () => {
    // A stream that never pauses must not ride its token into expiry.
    const { sub, clock, provider, next, c0 } = await liveWithRefresh();
    c0.event("e-1").event("e-2").event("e-3");
    assert.equal((await item(next)).kind, "event");
    await turns();
    assert.equal(provider.calls, 1);
    provider.answers.push(() => token(1, { exp: EXP + 60 }));
    clock.set(EXP * 1000 - 60_000);
    assert.equal((await item(sub.next())).kind, "event");
    assert.equal(provider.calls, 2, "the provider is asked before the waiting event is handed out");
    sub.close();
  });

  it("counts an expiry no later than the old one as a failure, and tries again patiently", async () => {
    const { sub, clock, provider, server, next } = await liveWithRefresh();
    clock.set(EXP * 1000 - 60_000);
    const r0 = await settle(server.refreshes.nth(0), "RefreshToken");
    r0.answer(refreshAnswer(EXP));
    // patientDelay(2) with draw 0.5: 500 + 250 ms.
    const retryAt = clock.nowMs() + 750;
    await until(() => clock.deadlines().includes(retryAt), "the patient retry");
    assert.equal(sub.progress.refreshes, 0);
    assert.equal(sub.credentials.token, provider.issued[0], "not swapped");
    clock.set(retryAt);
    const r1 = await settle(server.refreshes.nth(1), "the second RefreshToken");
    r1.fail(Code.Unavailable);
    // A second failure in a row: patientDelay(3) = 1,000 + 500 ms.
    const againAt = clock.nowMs() + 1_500;
    await until(() => clock.deadlines().includes(againAt), "the second patient retry");
    clock.set(againAt);
    const r2 = await settle(server.refreshes.nth(2), "the third RefreshToken");
    r2.answer(refreshAnswer(EXP + 1));
    await until(() => sub.progress.refreshes === 1, "the refresh");
    sub.close();
    await settle(next, "done");
  });

  it("reconnects at once with the new token, keeping the session, on FAILED_PRECONDITION", async () => {
    const { sub, clock, provider, server, next, c0, call } = await liveWithRefresh();
    clock.set(EXP * 1000 - 60_000);
    (await settle(server.refreshes.nth(0), "RefreshToken")).fail(Code.FailedPrecondition);
    const c1 = await call(1);
    assert.ok(c0.closed);
    assert.equal(c1.request.token, provider.issued[1]);
    assert.equal(c1.request.sessionTicket, "t-1");
    assert.equal(c1.request.lastEventId, "p-1");
    assert.equal(sub.progress.refreshes, 0);
    sub.close();
    await settle(next, "done");
  });

  it("reconnects without RefreshToken when the new token has other tags", async () => {
    const { sub, clock, provider, server, next, call } = await liveWithRefresh();
    provider.answers.push(() => token(1, { exp: EXP + 60, tags: ["a"] }));
    clock.set(EXP * 1000 - 60_000);
    const c1 = await call(1);
    assert.equal(server.refreshes.count, 0);
    assert.equal(c1.request.token, provider.issued[1]);
    assert.equal(c1.request.sessionTicket, "t-1");
    sub.close();
    await settle(next, "done");
  });

  it("starts over on another channel: no ticket, no last id", async () => {
    const { sub, clock, provider, next, call } = await liveWithRefresh();
    provider.answers.push(() => token(1, { chn: "elsewhere" }));
    clock.set(EXP * 1000 - 60_000);
    const c1 = await call(1);
    assert.equal(c1.request.token, provider.issued[1]);
    assert.equal(c1.request.sessionTicket, undefined);
    assert.equal(c1.request.lastEventId, undefined);
    sub.close();
    await settle(next, "done");
  });

  it("refreshes at once on TokenExpiring, whatever its own deadline says", async () => {
    const { sub, provider, server, next, c0 } = await liveWithRefresh();
    c0.tokenExpiring(EXP);
    const r0 = await settle(server.refreshes.nth(0), "RefreshToken");
    assert.equal(provider.calls, 2);
    r0.answer(refreshAnswer(EXP + 600));
    await until(() => sub.progress.refreshes === 1, "the refresh");
    sub.close();
    await settle(next, "done");
  });

  it("ignores TokenExpiring when refresh is off", async () => {
    const { sub, provider, server, call } = harness();
    const next = sub.next();
    const c0 = await call(0);
    c0.subscribed({ tokenExpiresAt: EXP }).tokenExpiring(EXP).event("e-1");
    await item(next);
    assert.equal(provider.calls, 1);
    assert.equal(server.refreshes.count, 0);
    sub.close();
  });

  it("retries a failing provider patiently during a refresh", async () => {
    const { sub, clock, provider, server, next } = await liveWithRefresh();
    provider.answers.push(() => Promise.reject(new Error("app server down")));
    clock.set(EXP * 1000 - 60_000);
    await until(() => provider.calls === 2, "the refresh's provider call");
    const retryAt = clock.nowMs() + 750;
    await until(() => clock.deadlines().includes(retryAt), "the patient retry");
    clock.set(retryAt);
    await settle(server.refreshes.nth(0), "RefreshToken after the provider recovered");
    sub.close();
    await settle(next, "done");
  });
});

describe("subscription: liveness", () => {
  it("reconnects when nothing arrived for 2.5 heartbeat intervals, and a heartbeat moves the deadline", async () => {
    const { sub, call, clock } = harness();
    const next = sub.next();
    const c0 = await call(0);
    c0.subscribed({ heartbeatIntervalMs: 1_000 });
    await until(() => clock.deadlines().includes(T0 + 2_500), "the liveness deadline");
    clock.advance(2_000);
    c0.heartbeat();
    await until(() => clock.deadlines().includes(T0 + 4_500), "the deadline after the heartbeat");
    clock.set(T0 + 4_499);
    await turns();
    assert.equal(c0.closed, false);
    clock.set(T0 + 4_500);
    const c1 = await call(1);
    assert.ok(c0.closed);
    assert.ok(c1);
    sub.close();
    await settle(next, "done");
  });

  it("ends with DEADLINE_EXCEEDED as the last failure", async () => {
    const { sub, call, clock } = harness({ backoff: { maxAttempts: 0 } });
    const next = sub.next();
    (await call(0)).subscribed({ heartbeatIntervalMs: 1_000 });
    await until(() => state(sub) === "live" && clock.deadlines().includes(T0 + 2_500), "the liveness deadline");
    clock.advance(2_500);
    const error = await rejection(next);
    assert.ok(error instanceof RetriesExhaustedError);
    assert.equal(error.code, Code.DeadlineExceeded);
  });

  it("takes a message already received before any deadline (a busy consumer is no dead stream)", async () => {
    const { sub, call, clock, server } = harness();
    const first = sub.next();
    const c0 = await call(0);
    c0.subscribed({ heartbeatIntervalMs: 1_000 }).event("e-1");
    await item(first);
    // The consumer is busy: e-2 arrives meanwhile, and the clock passes the liveness window.
    c0.event("e-2");
    await turns();
    clock.advance(60_000);
    assert.equal(((await item(sub.next())) as { id: string }).id, "e-2");
    assert.equal(server.subscribes.count, 1, "no reconnect");
    sub.close();
  });

  it("can be turned off", async () => {
    const { sub, call, clock } = harness({ livenessIntervals: null });
    const next = sub.next();
    (await call(0)).subscribed({ heartbeatIntervalMs: 1_000 });
    await until(() => state(sub) === "live", "live");
    await turns();
    assert.equal(clock.pendingSleeps, 0, "no deadline at all");
    sub.close();
    await settle(next, "done");
  });
});

describe("subscription: the token provider", () => {
  it("waits patiently between failures and fails with TokenProvider after tokenAttempts", async () => {
    const { sub, clock, provider } = harness({ tokenAttempts: 5 });
    for (let i = 0; i < 5; i++) provider.answers.push(() => Promise.reject(new Error(`no token ${i}`)));
    const next = sub.next();
    // patientDelay(failures + 1) with draw 0.5: 3/4 of the ceiling.
    const waits = [750, 1_500, 3_000, 6_000];
    for (const [index, wait] of waits.entries()) {
      await until(
        () => sub.progress.state.kind === "tokenBackoff" && sub.progress.state.failures === index + 1,
        `token backoff ${index + 1}`,
      );
      assert.deepEqual(sub.progress.state, { kind: "tokenBackoff", failures: index + 1, untilMs: clock.nowMs() + wait });
      clock.advance(wait);
    }
    const error = await rejection(next);
    assert.ok(error instanceof TokenProviderError);
    assert.equal(error.attempts, 5);
    assert.match(error.message, /failed 5 times in a row: no token 4/);
  });

  it("counts a provider that returns no string as a failure", async () => {
    const { sub, provider } = harness({ tokenAttempts: 1 });
    provider.answers.push(() => 42 as unknown as string);
    const error = await rejection(sub.next());
    assert.ok(error instanceof TokenProviderError);
    assert.match(error.message, /getToken returned number, not a string/);
  });
});

describe("subscription: closing leaves nothing behind", () => {
  /** Each scenario brings a subscription to one state; closing must then release everything. */
  const scenarios: Array<[string, (h: ReturnType<typeof harness>) => Promise<void>]> = [
    [
      "connecting",
      async (h) => {
        await h.call(0);
        await until(() => state(h.sub) === "connecting", "connecting");
      },
    ],
    [
      "backingOff",
      async (h) => {
        (await h.call(0)).end(Code.Unavailable);
        (await h.call(1)).end(Code.Unavailable);
        await until(() => state(h.sub) === "backingOff", "backing off");
      },
    ],
    [
      "fetchingToken",
      async (h) => {
        h.provider.hangNext();
        await until(() => state(h.sub) === "fetchingToken" && h.provider.calls === 1, "fetching a token");
      },
    ],
    [
      "tokenBackoff",
      async (h) => {
        h.provider.answers.push(() => Promise.reject(new Error("down")));
        await until(() => state(h.sub) === "tokenBackoff", "token backoff");
      },
    ],
    [
      "live",
      async (h) => {
        (await h.call(0)).subscribed({ heartbeatIntervalMs: 1_000 });
        await until(() => state(h.sub) === "live" && h.clock.pendingSleeps === 1, "live, with its liveness deadline");
      },
    ],
    [
      "refreshing",
      async (h) => {
        (await h.call(0)).subscribed({ heartbeatIntervalMs: 100_000, tokenExpiresAt: T0_SECS + 100 });
        await until(() => state(h.sub) === "live", "live");
        h.clock.set(T0 + 40_000);
        await settle(h.server.refreshes.nth(0), "RefreshToken in flight");
      },
    ],
  ];

  for (const [name, reach] of scenarios) {
    for (const how of ["return()", "the signal"] as const) {
      it(`${name}, closed by ${how}`, async () => {
        const controller = new AbortController();
        const h = harness({ signal: controller.signal, refreshBeforeExpirySeconds: 60 });
        const next = h.sub.next();
        await reach(h);
        assert.equal(state(h.sub), name === "refreshing" ? "live" : name);
        // Its outcome is caught at once: it rejects as soon as the subscription closes.
        const invoke = h.sub.invoke(["routerClient", "ping"]).then(
          () => assert.fail("the call should have been cancelled"),
          (error: unknown) => error,
        );
        if (name === "live" || name === "refreshing") await settle(h.server.invokes.nth(0), "the Invoke in flight");
        if (how === "return()") await settle(h.sub.return(), "return()");
        else controller.abort();
        assert.deepEqual(await settle(next, "the pending next()"), { done: true, value: undefined });
        const error = await settle(invoke, "the cancelled call");
        assert.ok(error instanceof StatusError || error instanceof TokenProviderError, String(error));
        if (error instanceof StatusError) assert.equal(error.code, Code.Canceled);
        assert.equal(state(h.sub), "closed");
        assert.equal(h.clock.pendingSleeps, 0, "no timer left");
        await until(() => h.server.subscribes.all.every((c) => c.closed), "every stream closed");
        await until(() => h.server.refreshes.all.every((c) => c.signal.aborted), "every RefreshToken cancelled");
        await until(() => h.server.invokes.all.every((c) => c.signal.aborted), "every Invoke cancelled");
        assert.ok(h.provider.signals.every((s) => s.aborted), "every provider call told to stop");
        assert.deepEqual(await h.sub.next(), { done: true, value: undefined });
      });
    }
  }

  it("is closed at once when the signal is already aborted", async () => {
    const h = harness({ signal: AbortSignal.abort() });
    assert.equal(state(h.sub), "closed");
    assert.deepEqual(await h.sub.next(), { done: true, value: undefined });
    assert.equal(h.server.subscribes.count, 0);
  });

  it("leaves no timer of the system clock behind (backing off, and live with both deadlines)", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const server = new FakeServer();
    const client = createClient({ transport: server.transport, clock: new SystemClock() });
    const provider = new Provider();
    // Live, with a liveness deadline and a refresh deadline pending.
    const live = client.subscribe({ getToken: provider.getToken, refreshBeforeExpirySeconds: 60 });
    const n1 = live.next();
    (await settle(server.subscribe(0), "Subscribe")).subscribed({
      heartbeatIntervalMs: 60_000,
      tokenExpiresAt: Math.floor(Date.now() / 1000) + 3_600,
    });
    await until(() => live.progress.state.kind === "live" && timers() >= before + 2, "two timers");
    await live.return();
    await settle(n1, "done");
    // Backing off (retry 2 waits half a second with this draw).
    const backing = client.subscribe({ getToken: provider.getToken, random: () => 0.5 });
    const n2 = backing.next();
    (await settle(server.subscribe(1), "Subscribe")).end(Code.Unavailable);
    (await settle(server.subscribe(2), "Subscribe")).end(Code.Unavailable);
    await until(() => backing.progress.state.kind === "backingOff", "backing off");
    assert.ok(timers() > before);
    backing.close();
    await settle(n2, "done");
    await turns();
    assert.equal(timers(), before, "every timer cleared");
  });
});

describe("subscription: invoke", () => {
  it("calls as the session with the current token, and renews a refused token once", async () => {
    const { sub, call, server, provider } = harness();
    const first = sub.next();
    (await call(0)).subscribed({ sessionTicket: "t-1" }).event("e-1");
    await item(first);
    const answer = sub.invoke(["routerClient", "echo"], { text: "hi" });
    const i0 = await settle(server.invokes.nth(0), "Invoke");
    assert.equal(i0.request.token, provider.issued[0]);
    assert.equal(i0.request.sessionTicket, "t-1");
    assert.deepEqual(i0.request.path, ["routerClient", "echo"]);
    i0.fail(Code.Unauthenticated, "expired");
    const i1 = await settle(server.invokes.nth(1), "Invoke again");
    assert.equal(i1.request.token, provider.issued[1]);
    i1.answer(invokeAnswer("Echo: hi"));
    assert.equal(await settle(answer, "the answer"), "Echo: hi");
    // Refused twice: the error.
    const again = sub.invoke(["routerClient", "echo"], { text: "x" });
    (await settle(server.invokes.nth(2), "Invoke")).fail(Code.Unauthenticated);
    (await settle(server.invokes.nth(3), "Invoke")).fail(Code.Unauthenticated, "still expired");
    const error = await rejection(again);
    assert.ok(error instanceof StatusError);
    assert.equal(error.rawMessage, "still expired");
    sub.close();
  });

  it("gets a token first when no stream opened yet", async () => {
    const { sub, server, provider } = harness({ sessionTicket: "given" });
    const answer = sub.invoke(["routerClient", "ping"]);
    const i0 = await settle(server.invokes.nth(0), "Invoke");
    assert.equal(i0.request.token, provider.issued[0]);
    assert.equal(i0.request.sessionTicket, "given");
    i0.answer(invokeAnswer("pong"));
    assert.equal(await settle(answer, "pong"), "pong");
    sub.close();
  });

  it("types calls through method descriptors, with Encode and Decode errors", async () => {
    const { sub, server } = harness();
    const echo = method<{ text: string }, string>(["routerClient", "echo"], { decode: decode.string });
    const ping = method<void, string>(["routerClient", "ping"], { decode: decode.string });
    const answer = sub.call(echo, { text: "hi" });
    const i0 = await settle(server.invokes.nth(0), "Invoke");
    assert.deepEqual(i0.request.input?.kind.case, "structValue");
    i0.answer(invokeAnswer("Echo: hi"));
    assert.equal(await settle(answer, "typed answer"), "Echo: hi");

    const wrong = sub.call(ping);
    (await settle(server.invokes.nth(1), "Invoke")).answer(invokeAnswer({ not: "a string" }));
    const decodeError = await rejection(wrong);
    assert.ok(decodeError instanceof DecodeError);
    assert.equal(decodeError.method, "routerClient.ping");
    assert.match(decodeError.message, /expected a string, got an object/);

    const bad = method<{ n: bigint }, string>(["routerClient", "echo"]);
    const encodeError = await rejection(sub.call(bad, { n: 1n }));
    assert.ok(encodeError instanceof EncodeError);
    assert.equal(server.invokes.count, 2, "nothing sent");
    sub.close();
  });

  it("is refused once the subscription is closed", async () => {
    const { sub } = harness();
    sub.close();
    const error = await rejection(sub.invoke(["x"]));
    assert.ok(error instanceof StatusError);
    assert.equal(error.code, Code.Canceled);
  });
});

describe("client: invoke retries", () => {
  it("retries UNAVAILABLE only, and only as often as asked", async () => {
    const server = new FakeServer();
    const clock = new ManualClock(T0);
    const client = createClient({ transport: server.transport, clock });
    const credentials = { token: token(0), sessionTicket: undefined };
    const answer = client.invoke(credentials, ["m"], null, { retries: 2 });
    (await settle(server.invokes.nth(0), "Invoke")).fail(Code.Unavailable);
    (await settle(server.invokes.nth(1), "the first retry, at once")).fail(Code.Unavailable);
    await until(() => clock.pendingSleeps === 1 || server.invokes.count === 3, "the second retry's wait");
    clock.advance(1_000);
    (await settle(server.invokes.nth(2), "the second retry")).fail(Code.Unavailable, "still down");
    const error = await rejection(answer);
    assert.ok(error instanceof StatusError);
    assert.equal(error.rawMessage, "still down");
    assert.equal(server.invokes.count, 3);

    const denied = client.invoke(credentials, ["m"], null, { retries: 5 });
    (await settle(server.invokes.nth(3), "Invoke")).fail(Code.PermissionDenied, "no");
    const deniedError = await rejection(denied);
    assert.ok(deniedError instanceof StatusError);
    assert.equal(deniedError.code, Code.PermissionDenied);
    assert.equal(server.invokes.count, 4, "not retried");
    assert.equal(clock.pendingSleeps, 0);
  });
});
