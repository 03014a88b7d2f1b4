/**
 * The reconnecting subscription: a state machine driven by the consumer's `next()` calls.
 *
 * It runs no loop of its own: the gRPC stream, the timers (backoff, refresh, liveness) and a
 * refresh in flight all live in its state and only move while the consumer waits for the next
 * item, as in the Rust client. A consumer that stops reading stops the reading (the server's
 * queue for it fills, and it ends the stream as a slow consumer: the subscription resumes from
 * the store, with nothing lost). Closing it (`return()`, `close()`, the `signal`) closes the
 * stream, every timer and any call in flight.
 *
 * One loop: connect (wait the backoff, get a token if needed, `Subscribe`, read `Subscribed`),
 * then read the stream while watching the liveness and refresh deadlines. Any end of the stream
 * goes through {@link onStatus}: reconnect, renew the token, or fail.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";

import { Backoff, type BackoffOptions } from "./backoff.js";
import type { Clock } from "./clock.js";
import type { InputArgs, Method } from "./contract.js";
import { RetriesExhaustedError, StatusError, TokenProviderError, type ClientError } from "./errors.js";
import {
  RefreshTokenRequestSchema,
  SubscribeRequestSchema,
  type SubscribeResponse,
  type Subscribed,
} from "./gen/durable_iterator/v1/durable_iterator_pb.js";
import { eventFromProto, reportFromOutcome, type ResumeReport, type SubscriptionItem } from "./items.js";
import type { JsonValue } from "./json.js";
import { invoke, typedCall, type Credentials, type InvokeOptions, type Rpc } from "./invoke.js";
import { onStatus } from "./policy.js";
import { anySignal, track, waitAny, type Tracked } from "./signals.js";
import { refreshableInPlace, unverifiedClaims, type TokenProvider } from "./token.js";

/** How a subscription behaves. Only `getToken` is required. */
export interface SubscribeOptions {
  /** Where tokens come from (see {@link TokenProvider}). */
  getToken: TokenProvider;
  /** Aborting it closes the subscription, like `return()`. */
  signal?: AbortSignal | undefined;
  /**
   * Resume after this event id at the first subscribe (later reconnects resume after the last
   * event received).
   */
  lastEventId?: string | undefined;
  /** Keep the session of this ticket (from an earlier subscription) at the first subscribe. */
  sessionTicket?: string | undefined;
  /**
   * The reconnect schedule: first retry at once, then full jitter up to
   * `min(capMs, baseMs × 2^(n−2))`; default base 1,000 ms, cap 10,000 ms, unlimited attempts.
   */
  backoff?: BackoffOptions | undefined;
  /**
   * Ask `getToken` for a new token this long before the current one expires, and swap it on
   * the live stream. Unset (the default): no refresh; an expired stream reconnects with a new
   * token from the provider.
   */
  refreshBeforeExpirySeconds?: number | undefined;
  /**
   * The stream counts as dead when nothing (event or heartbeat) arrived for this many heartbeat
   * intervals; `null` turns the check off. Default 2.5.
   */
  livenessIntervals?: number | null | undefined;
  /** Longest wait for `Subscribed` after the call is sent, in ms. Default 30,000. */
  handshakeTimeoutMs?: number | undefined;
  /**
   * Token provider failures in a row before the subscription fails with a
   * `TokenProviderError` (between them it waits a patient backoff). Default 5.
   */
  tokenAttempts?: number | undefined;
  /**
   * Where the subscription says what it is doing (reconnects, provider failures); silent by
   * default. Lines for people, not for programs: watch {@link Subscription.onProgress} instead.
   */
  log?: ((level: "debug" | "warn", message: string) => void) | undefined;
  /** The uniform draw in `[0, 1)` of the backoff's jitter (default `Math.random`; tests fix it). */
  random?: (() => number) | undefined;
}

/** Where the subscription is, for status displays and tests. */
export type ConnectionState =
  /** Calling `Subscribe` (retry 0 is the first connect or a deliberate reconnect). */
  | { readonly kind: "connecting"; readonly retry: number }
  /** Waiting before retry `retry`, until `untilMs` on the client's clock. */
  | { readonly kind: "backingOff"; readonly retry: number; readonly untilMs: number }
  /** Waiting for the token provider (after `failures` failures in a row). */
  | { readonly kind: "fetchingToken"; readonly failures: number }
  /** Waiting before asking a failing token provider again, until `untilMs`. */
  | { readonly kind: "tokenBackoff"; readonly failures: number; readonly untilMs: number }
  /** The stream is open. */
  | { readonly kind: "live" }
  /** The subscription has ended (error, `return()`, or abort). */
  | { readonly kind: "closed" };

/** A snapshot of the subscription's progress. */
export interface Progress {
  readonly state: ConnectionState;
  /** Streams opened so far (`Subscribed` received). */
  readonly connections: number;
  /** Tokens swapped on a live stream (`RefreshToken`). */
  readonly refreshes: number;
  /** The server-assigned session id, once known. */
  readonly sessionId: string | undefined;
}

/** What a subscription needs of its client. */
export interface SubscriptionContext {
  readonly rpc: Rpc;
  readonly clock: Clock;
}

/** The outcome of a refresh: the provider call, then `RefreshToken` when the token allows it. */
type Refreshed =
  /** The live stream now runs on `token`, expiring at `expiresAt` (Unix seconds). */
  | { kind: "inPlace"; token: string; expiresAt: number }
  /** The new token names another channel or tag set (or the server said so): reconnect. */
  | { kind: "reconnect"; token: string }
  /** The provider or the call failed; try again later. */
  | { kind: "failed" };

/** The open stream and its deadlines. */
interface Live {
  readonly stream: AbortController;
  readonly messages: AsyncIterator<SubscribeResponse>;
  /** The next message, asked for ahead: a message that arrived is taken before any deadline. */
  read: Tracked<IteratorResult<SubscribeResponse>> | undefined;
  expiresAtMs: number;
  readonly heartbeatMs: number;
  lastSeenMs: number;
  /**
   * Whether an event or a heartbeat arrived: only then has the stream proved itself and the
   * backoff starts over (a server that accepts and drops at once gets no fast loop).
   */
  proven: boolean;
  refresh: Tracked<Refreshed> | undefined;
  /** When to start the next refresh; `undefined`: refresh off. */
  refreshAtMs: number | undefined;
  refreshFailures: number;
}

/** How one connect attempt went. */
type Connected =
  | { kind: "live"; report: ResumeReport | undefined }
  | { kind: "retry" }
  | { kind: "fatal"; error: ClientError }
  | { kind: "closed" };

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * A subscription: an `AsyncIterable` of {@link SubscriptionItem}s (`for await`), and a handle
 * to call methods as its session and watch its progress.
 *
 * It reconnects on transport failures and retryable statuses, resuming after the last event id
 * with the session ticket, so the session (and `targets`/`exclude` aimed at it) survives. An
 * error that retrying cannot fix rejects one `next()` (the `for await` throws it), then the
 * iterator is done. Breaking out of `for await`, `return()`, `close()` or the `signal` closes
 * it.
 */
export class Subscription implements AsyncIterableIterator<SubscriptionItem> {
  readonly #rpc: Rpc;
  readonly #clock: Clock;
  readonly #getToken: TokenProvider;
  readonly #backoff: Backoff;
  readonly #refreshBeforeMs: number | undefined;
  readonly #liveness: number | null;
  readonly #handshakeTimeoutMs: number;
  readonly #tokenAttempts: number;
  readonly #log: (level: "debug" | "warn", message: string) => void;
  readonly #random: () => number;

  /** Aborted when the subscription closes: every wait, stream and call listens to it. */
  readonly #closing = new AbortController();
  readonly #userSignal: AbortSignal | undefined;
  readonly #onUserAbort = () => this.close();
  #tail: Promise<unknown> = Promise.resolve();
  #listeners = new Set<(progress: Progress) => void>();
  #progress: Progress = {
    state: { kind: "connecting", retry: 0 },
    connections: 0,
    refreshes: 0,
    sessionId: undefined,
  };
  #credentials: Credentials;

  /** The token to subscribe with; `undefined`: ask the provider first. */
  #token: string | undefined;
  /**
   * The token came from the provider and has not been tried yet: if its first try is refused
   * as unauthenticated, asking again would loop, so that ends the subscription. A try that
   * failed otherwise (a server that was down) clears it: by the next try the token may have
   * expired, and then the provider must be asked again.
   */
  #tokenFresh = false;
  #lastEventId: string | undefined;
  #ticket: string | undefined;
  /** The channel of the last `Subscribed`. */
  #channel: string | undefined;
  /** Failed attempts since the stream last proved itself; retry `#failures` is next. */
  #failures = 0;
  #lastFailure: StatusError | undefined;
  /** The stream of the connect attempt under way, until it goes live. */
  #attempt: AbortController | undefined;
  #live: Live | undefined;
  #done = false;

  /** @internal Use `client.subscribe(options)`. */
  constructor(context: SubscriptionContext, options: SubscribeOptions) {
    if (typeof options?.getToken !== "function") {
      throw new TypeError("subscribe needs getToken: a function that returns a token");
    }
    this.#rpc = context.rpc;
    this.#clock = context.clock;
    this.#getToken = options.getToken;
    this.#backoff = new Backoff(options.backoff);
    this.#refreshBeforeMs =
      options.refreshBeforeExpirySeconds === undefined
        ? undefined
        : Math.round(positive(options.refreshBeforeExpirySeconds, "refreshBeforeExpirySeconds", true) * 1000);
    this.#liveness =
      options.livenessIntervals === null
        ? null
        : positive(options.livenessIntervals ?? 2.5, "livenessIntervals", false);
    this.#handshakeTimeoutMs = positive(options.handshakeTimeoutMs ?? 30_000, "handshakeTimeoutMs", false);
    this.#tokenAttempts = Math.max(1, Math.floor(positive(options.tokenAttempts ?? 5, "tokenAttempts", false)));
    this.#log = options.log ?? (() => {});
    this.#random = options.random ?? Math.random;
    this.#lastEventId = options.lastEventId;
    this.#ticket = options.sessionTicket;
    this.#credentials = { token: "", sessionTicket: options.sessionTicket };
    this.#userSignal = options.signal;
    if (this.#userSignal?.aborted) this.close();
    else this.#userSignal?.addEventListener("abort", this.#onUserAbort, { once: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * The next item: an event, or a resume report. Rejects once with the error that ended the
   * subscription; done after it is closed. Calls made while one is pending wait their turn.
   */
  next(): Promise<IteratorResult<SubscriptionItem, undefined>> {
    const step = this.#tail.then(() => this.#step());
    this.#tail = step.catch(() => {});
    return step;
  }

  /**
   * Closes the subscription (what `break` in a `for await` calls): the stream, the timers and
   * pending calls. Resolves once the item being read, if any, has been abandoned.
   */
  async return(): Promise<IteratorReturnResult<undefined>> {
    this.close();
    await this.#tail;
    return DONE;
  }

  /** Closes the subscription at once; pending and later `next()` calls are done. */
  close(): void {
    if (!this.#closing.signal.aborted) this.#closing.abort();
    this.#shutDown();
  }

  /** The subscription's progress now. */
  get progress(): Progress {
    return this.#progress;
  }

  /** The server-assigned session id, once the first stream opened. */
  get sessionId(): string | undefined {
    return this.#progress.sessionId;
  }

  /**
   * The token in use and the session ticket: what a method call as this session needs. The
   * token is `""` until the first stream opened.
   */
  get credentials(): Credentials {
    return this.#credentials;
  }

  /** Whether the subscription has ended. */
  get closed(): boolean {
    return this.#done;
  }

  /**
   * Calls `listener` with each new progress (state changes, a new connection, a refresh), at
   * once as it happens. Returns the function that stops it.
   */
  onProgress(listener: (progress: Progress) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Calls a method of the channel object as this subscription's session (JSON in, JSON out). A
   * call refused as `UNAUTHENTICATED` (the token expired) is sent once more with a new token
   * from the provider. Closing the subscription cancels it.
   */
  async invoke(path: readonly string[], input?: unknown, options: InvokeOptions = {}): Promise<JsonValue> {
    if (this.#done) throw new StatusError(Code.Canceled, "the subscription is closed");
    const { signal, release } = anySignal(this.#closing.signal, options.signal);
    const callOptions = { ...options, signal };
    try {
      let credentials = this.#credentials;
      if (credentials.token === "") credentials = { ...credentials, token: await this.#freshToken(signal) };
      try {
        return await invoke(this.#rpc, this.#clock, credentials, path, input, callOptions);
      } catch (error) {
        if (!(error instanceof StatusError) || error.code !== Code.Unauthenticated) throw error;
        credentials = { ...credentials, token: await this.#freshToken(signal) };
        return await invoke(this.#rpc, this.#clock, credentials, path, input, callOptions);
      }
    } finally {
      release();
    }
  }

  /**
   * Calls a typed method as this subscription's session: the input and output types are the
   * ones `method` declares, so a call with the wrong types does not compile.
   */
  call<I, O>(method: Method<I, O>, ...args: [...InputArgs<NoInfer<I>>, options?: InvokeOptions]): Promise<O> {
    const [input, options] = args as unknown as [I, InvokeOptions | undefined];
    return typedCall(method, input, (json) => this.invoke(method.path, json, options));
  }

  async #freshToken(signal: AbortSignal): Promise<string> {
    try {
      return await this.#askProvider(signal);
    } catch (error) {
      throw new TokenProviderError(1, error);
    }
  }

  /** One call of the provider, checked. */
  async #askProvider(signal: AbortSignal): Promise<string> {
    const token = await this.#getToken({ signal });
    if (typeof token !== "string") {
      throw new TypeError(`getToken returned ${token === null ? "null" : typeof token}, not a string`);
    }
    return token;
  }

  // ---- the state machine -------------------------------------------------------------------

  async #step(): Promise<IteratorResult<SubscriptionItem, undefined>> {
    for (;;) {
      if (this.#done) return DONE;
      if (this.#closing.signal.aborted) return this.#shutDown();
      if (!this.#live) {
        const connected = await this.#connect();
        switch (connected.kind) {
          case "live":
            if (connected.report) return { done: false, value: connected.report };
            continue;
          case "retry":
            continue;
          case "fatal":
            throw this.#fail(connected.error);
          case "closed":
            return this.#shutDown();
        }
      }
      const item = await this.#read();
      if (item) return item;
    }
  }

  #shutDown(): IteratorReturnResult<undefined> {
    if (this.#done) return DONE;
    this.#done = true;
    this.#dropLive();
    this.#attempt?.abort();
    this.#attempt = undefined;
    this.#userSignal?.removeEventListener("abort", this.#onUserAbort);
    this.#update({ state: { kind: "closed" } });
    this.#listeners.clear();
    return DONE;
  }

  #fail(error: ClientError): ClientError {
    this.#log("warn", `the subscription failed: ${error.message}`);
    // Closing also cancels calls in flight: the session they would speak for is gone.
    this.close();
    return error;
  }

  /** Waits until `untilMs` unless closed first; false if closed. */
  async #wait(untilMs: number): Promise<boolean> {
    await waitAny(this.#clock, this.#closing.signal, [], [untilMs]);
    return !this.#closing.signal.aborted;
  }

  async #connect(): Promise<Connected> {
    const retry = this.#failures;
    if (this.#backoff.exhausted(retry)) {
      const last = this.#lastFailure ?? new StatusError(Code.Unavailable, "no reason given");
      return { kind: "fatal", error: new RetriesExhaustedError(retry - 1, last) };
    }
    const delay = this.#backoff.randomDelay(retry, this.#random);
    if (delay > 0) {
      const untilMs = this.#clock.nowMs() + delay;
      this.#setState({ kind: "backingOff", retry, untilMs });
      if (!(await this.#wait(untilMs))) return { kind: "closed" };
    }
    let token = this.#token;
    if (token === undefined) {
      const fetched = await this.#fetchToken();
      if (fetched.kind !== "token") return fetched;
      token = fetched.token;
    }
    // A token for another channel starts a new subscription there: the ticket is bound to the
    // old channel, and the last id counts the old channel's events.
    const claims = unverifiedClaims(token);
    if (this.#channel !== undefined && claims && claims.chn !== this.#channel) {
      this.#ticket = undefined;
      this.#lastEventId = undefined;
    }
    this.#setState({ kind: "connecting", retry });
    const request = create(SubscribeRequestSchema, {
      token,
      lastEventId: this.#lastEventId,
      sessionTicket: this.#ticket,
    });
    const stream = new AbortController();
    this.#attempt = stream;
    const messages = this.#rpc.subscribe(request, { signal: stream.signal })[Symbol.asyncIterator]();
    const first = track(messages.next());
    const handshakeDeadline = this.#clock.nowMs() + this.#handshakeTimeoutMs;
    await waitAny(this.#clock, this.#closing.signal, [first.settled], [handshakeDeadline]);
    this.#attempt = undefined;
    if (this.#closing.signal.aborted) {
      stream.abort();
      return { kind: "closed" };
    }
    const outcome = first.outcome;
    if (!outcome) {
      stream.abort();
      return this.#onEnd(new StatusError(Code.DeadlineExceeded, "no Subscribed message in time"));
    }
    if (!outcome.ok) {
      stream.abort();
      return this.#onEnd(StatusError.from(outcome.error));
    }
    const message = outcome.value;
    if (message.done || message.value.kind.case !== "subscribed") {
      stream.abort();
      return this.#onEnd(new StatusError(Code.Internal, "the stream did not start with a Subscribed message"));
    }
    return { kind: "live", report: this.#wentLive(stream, messages, message.value.kind.value) };
  }

  /** Asks the provider until it answers, waiting a patient backoff between failures. */
  async #fetchToken(): Promise<{ kind: "token"; token: string } | Connected> {
    for (let failures = 0; ; ) {
      this.#setState({ kind: "fetchingToken", failures });
      const fetched = track(this.#askProvider(this.#closing.signal));
      await waitAny(this.#clock, this.#closing.signal, [fetched.settled], []);
      if (this.#closing.signal.aborted || !fetched.outcome) return { kind: "closed" };
      if (fetched.outcome.ok) {
        this.#token = fetched.outcome.value;
        this.#tokenFresh = true;
        return { kind: "token", token: fetched.outcome.value };
      }
      failures += 1;
      const error = fetched.outcome.error;
      this.#log("warn", `the token provider failed (${failures} in a row): ${describe(error)}`);
      if (failures >= this.#tokenAttempts) {
        return { kind: "fatal", error: new TokenProviderError(failures, error) };
      }
      // Never at once: a failing provider (the app server) must not be hammered.
      const untilMs = this.#clock.nowMs() + this.#backoff.randomPatientDelay(failures + 1, this.#random);
      this.#setState({ kind: "tokenBackoff", failures, untilMs });
      if (!(await this.#wait(untilMs))) return { kind: "closed" };
    }
  }

  #wentLive(
    stream: AbortController,
    messages: AsyncIterator<SubscribeResponse>,
    subscribed: Subscribed,
  ): ResumeReport | undefined {
    const now = this.#clock.nowMs();
    const resume = subscribed.resume;
    const report = reportFromOutcome(resume, this.#lastEventId, subscribed.sessionId);
    this.#tokenFresh = false;
    // With no event received yet, or an id the server could not resume from and nothing
    // replayed, the stream's position is where to resume: events published while the
    // connection is down are then not lost (the lost history was reported above).
    const unusable = resume !== undefined && resume.requested && !resume.recovered && resume.replayed === 0n;
    if ((this.#lastEventId === undefined || unusable) && subscribed.position !== "") {
      this.#lastEventId = subscribed.position;
    }
    this.#ticket = subscribed.sessionTicket;
    this.#channel = subscribed.channel;
    this.#credentials = { token: this.#token ?? "", sessionTicket: this.#ticket };
    const expiresAtMs = Math.max(0, Number(subscribed.tokenExpiresAt)) * 1000;
    this.#live = {
      stream,
      messages,
      read: track(messages.next()),
      expiresAtMs,
      heartbeatMs: subscribed.heartbeatIntervalMs,
      lastSeenMs: now,
      proven: false,
      refresh: undefined,
      refreshAtMs: this.#refreshDeadline(expiresAtMs),
      refreshFailures: 0,
    };
    this.#update({
      state: { kind: "live" },
      connections: this.#progress.connections + 1,
      sessionId: subscribed.sessionId,
    });
    return report;
  }

  #refreshDeadline(expiresAtMs: number): number | undefined {
    if (this.#refreshBeforeMs === undefined) return undefined;
    return Math.max(0, expiresAtMs - this.#refreshBeforeMs);
  }

  #dropLive(): void {
    this.#live?.stream.abort();
    this.#live = undefined;
  }

  /** Decides what a status that ended (or refused) the stream means for the next attempt. */
  #onEnd(status: StatusError): Connected {
    this.#dropLive();
    switch (onStatus(status.code)) {
      case "reconnect":
        this.#tokenFresh = false;
        break;
      case "renewToken":
        // A token straight from the provider was refused: asking again would loop.
        if (this.#tokenFresh) return { kind: "fatal", error: status };
        this.#token = undefined;
        break;
      case "fail":
        return { kind: "fatal", error: status };
    }
    this.#log("debug", `reconnecting after ${status.message}`);
    this.#failures += 1;
    this.#lastFailure = status;
    return { kind: "retry" };
  }

  /**
   * Reads the open stream until it yields an item for the consumer, or has to be reconnected
   * (`undefined`, with the live stream dropped), or has done something else worth a new look
   * (a refresh started or ended: also `undefined`).
   */
  async #read(): Promise<IteratorResult<SubscriptionItem, undefined> | undefined> {
    const live = this.#live;
    if (!live) return undefined;
    live.read ??= track(live.messages.next());
    const read = live.read;
    let fired = [false, false];
    // Messages already received come before the liveness deadline: a consumer that was busy
    // must not take its own slowness for a dead stream. Only when nothing is at hand do we wait.
    if (!read.outcome && !live.refresh?.outcome) {
      const livenessAt =
        this.#liveness !== null && live.heartbeatMs > 0
          ? live.lastSeenMs + Math.floor(live.heartbeatMs * this.#liveness)
          : undefined;
      const refreshAt = live.refresh ? undefined : live.refreshAtMs;
      const pending = live.refresh ? [read.settled, live.refresh.settled] : [read.settled];
      fired = await waitAny(this.#clock, this.#closing.signal, pending, [livenessAt, refreshAt]);
    }
    if (this.#closing.signal.aborted) return this.#shutDown();
    const now = this.#clock.nowMs();
    // A refresh goes before waiting messages: a stream that never pauses must not ride its
    // token into expiry.
    if (live.refresh?.outcome) {
      const refreshed = live.refresh.outcome;
      live.refresh = undefined;
      // #refreshTask never rejects; a rejection would be a bug, and counts as a failure.
      this.#onRefreshed(live, refreshed.ok ? refreshed.value : { kind: "failed" }, now);
      return undefined;
    }
    if (!live.refresh && live.refreshAtMs !== undefined && live.refreshAtMs <= now) {
      live.refresh = track(this.#refreshTask(live));
      return undefined;
    }
    if (read.outcome) {
      live.read = undefined;
      return this.#onMessage(live, read.outcome, now);
    }
    if (fired[0]) {
      this.#log("debug", "no event or heartbeat in time: reconnecting");
      return this.#onConnectionLoss(
        new StatusError(Code.DeadlineExceeded, "no event or heartbeat within the liveness window"),
      );
    }
    if (fired[1]) {
      live.refresh = track(this.#refreshTask(live));
    }
    return undefined;
  }

  #onMessage(
    live: Live,
    outcome: NonNullable<Tracked<IteratorResult<SubscribeResponse>>["outcome"]>,
    now: number,
  ): IteratorResult<SubscriptionItem, undefined> | undefined {
    if (!outcome.ok) return this.#onConnectionLoss(StatusError.from(outcome.error));
    if (outcome.value.done) {
      return this.#onConnectionLoss(new StatusError(Code.Unavailable, "the stream ended without a status"));
    }
    const message = outcome.value.value.kind;
    live.lastSeenMs = now;
    // Asked for at once: it arrives while the consumer handles this one, and comes first then.
    live.read = track(live.messages.next());
    // An event (progress) or a heartbeat (the stream lived a heartbeat interval) proves the
    // stream; a `TokenExpiring` sent at once on open proves nothing.
    if ((message.case === "event" || message.case === "heartbeat") && !live.proven) {
      live.proven = true;
      this.#failures = 0;
      this.#lastFailure = undefined;
    }
    switch (message.case) {
      case "event":
        this.#lastEventId = message.value.id;
        return { done: false, value: eventFromProto(message.value) };
      case "tokenExpiring":
        // The server's clock says the token is about to expire: refresh now if refreshing is
        // on (whatever our own deadline says).
        if (live.refreshAtMs !== undefined && !live.refresh) live.refreshAtMs = now;
        return undefined;
      default:
        return undefined;
    }
  }

  #onConnectionLoss(status: StatusError): undefined {
    const connected = this.#onEnd(status);
    if (connected.kind === "fatal") throw this.#fail(connected.error);
    return undefined;
  }

  /** The provider call, then `RefreshToken` if the new token allows it. Never rejects. */
  async #refreshTask(live: Live): Promise<Refreshed> {
    const current = this.#token ?? "";
    const ticket = this.#ticket ?? "";
    // The stream's signal: a refresh dies with the stream it refreshes.
    const signal = live.stream.signal;
    let token: string;
    try {
      token = await this.#askProvider(signal);
    } catch (error) {
      this.#log("warn", `the token provider failed (refresh): ${describe(error)}`);
      return { kind: "failed" };
    }
    if (!refreshableInPlace(current, token)) return { kind: "reconnect", token };
    try {
      const request = create(RefreshTokenRequestSchema, { sessionTicket: ticket, token });
      const response = await this.#rpc.refreshToken(request, { signal });
      return { kind: "inPlace", token, expiresAt: Math.max(0, Number(response.tokenExpiresAt)) };
    } catch (error) {
      const status = StatusError.from(error);
      // The server judges the subscription changed, or the session is not live on it (the
      // stream is being replaced): a reconnect with the new token settles both.
      if (status.code === Code.FailedPrecondition) return { kind: "reconnect", token };
      this.#log("warn", `RefreshToken failed: ${status.message}`);
      return { kind: "failed" };
    }
  }

  #onRefreshed(live: Live, refreshed: Refreshed, now: number): void {
    switch (refreshed.kind) {
      case "reconnect":
        // A deliberate reconnect, at once: the session ticket keeps the session.
        this.#token = refreshed.token;
        this.#tokenFresh = true;
        this.#dropLive();
        this.#failures = 0;
        return;
      case "inPlace": {
        const expiresAtMs = refreshed.expiresAt * 1000;
        if (expiresAtMs <= live.expiresAtMs) {
          // The provider handed out a token that expires no later: refreshing again at once
          // would spin, so this counts as a failure.
          this.#refreshFailed(live, now);
          return;
        }
        live.expiresAtMs = expiresAtMs;
        live.refreshAtMs = this.#refreshDeadline(expiresAtMs);
        live.refreshFailures = 0;
        this.#token = refreshed.token;
        this.#credentials = { ...this.#credentials, token: refreshed.token };
        this.#update({ refreshes: this.#progress.refreshes + 1 });
        return;
      }
      case "failed":
        this.#refreshFailed(live, now);
        return;
    }
  }

  /** Schedules the next refresh attempt after a failure, never at once. */
  #refreshFailed(live: Live, now: number): void {
    live.refreshFailures += 1;
    const delay = this.#backoff.randomPatientDelay(live.refreshFailures + 1, this.#random);
    live.refreshAtMs = now + Math.max(1, delay);
  }

  // ---- progress ----------------------------------------------------------------------------

  #setState(state: ConnectionState): void {
    if (sameState(this.#progress.state, state)) return;
    this.#update({ state });
  }

  #update(change: Partial<Progress>): void {
    // Closed is final: nothing that was still unwinding may report another state.
    if (this.#progress.state.kind === "closed") return;
    this.#progress = { ...this.#progress, ...change };
    for (const listener of [...this.#listeners]) {
      try {
        listener(this.#progress);
      } catch (error) {
        // A listener's bug must not break the subscription; report it as the platform does.
        reportListenerError(error);
      }
    }
  }
}

function sameState(a: ConnectionState, b: ConnectionState): boolean {
  if (a.kind !== b.kind) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  return Object.keys(x).every((key) => x[key] === y[key]);
}

function positive(value: number, name: string, zeroAllowed: boolean): number {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0 || (!zeroAllowed && value === 0)) {
    throw new RangeError(`${name} must be a number ${zeroAllowed ? ">= 0" : "> 0"}, not ${String(value)}`);
  }
  return value;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
  if (typeof report === "function") report(error);
  else console.error("a progress listener threw:", error);
}
