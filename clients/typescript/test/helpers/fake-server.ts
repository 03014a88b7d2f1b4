/**
 * A fake durable-iterator server for the unit tests: the real Connect client talks to it over
 * an in-memory transport (`createRouterTransport`), and each test decides, message by message,
 * what every `Subscribe` stream sends and how it ends. No network, no timers.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type HandlerContext } from "@connectrpc/connect";

import {
  DurableIterator,
  InvokeResponseSchema,
  RefreshTokenResponseSchema,
  ResumeOutcomeSchema,
  SubscribeResponseSchema,
  type InvokeRequest,
  type InvokeResponse,
  type RefreshTokenRequest,
  type RefreshTokenResponse,
  type ResumeFailure,
  type SubscribeRequest,
  type SubscribeResponse,
} from "../../src/gen/durable_iterator/v1/durable_iterator_pb.js";
import { jsonToProto, type JsonValue } from "../../src/json.js";

type Step = { message: SubscribeResponse } | { end: ConnectError | undefined };

/** One `Subscribe` call as the fake server sees it. */
export class SubscribeCall {
  readonly request: SubscribeRequest;
  readonly signal: AbortSignal;
  #queue: Step[] = [];
  #wake: (() => void) | undefined;

  constructor(request: SubscribeRequest, signal: AbortSignal) {
    this.request = request;
    this.signal = signal;
    signal.addEventListener("abort", () => this.#wake?.());
  }

  /** Whether the client has closed this stream. */
  get closed(): boolean {
    return this.signal.aborted;
  }

  send(message: SubscribeResponse["kind"]): this {
    this.#push({ message: create(SubscribeResponseSchema, { kind: message }) });
    return this;
  }

  /** The first message. */
  subscribed(options: SubscribedOptions = {}): this {
    const resume = options.resume
      ? create(ResumeOutcomeSchema, {
          requested: options.resume.requested ?? true,
          recovered: options.resume.recovered ?? false,
          failure: options.resume.failure ?? 0,
          replayed: BigInt(options.resume.replayed ?? 0),
          oldestRetainedId: options.resume.oldestRetainedId ?? "",
        })
      : create(ResumeOutcomeSchema, { requested: this.request.lastEventId !== undefined, recovered: true });
    return this.send({
      case: "subscribed",
      value: {
        $typeName: "durable_iterator.v1.Subscribed",
        channel: options.channel ?? "room",
        sessionId: options.sessionId ?? "session-1",
        sessionTicket: options.sessionTicket ?? "ticket-1",
        resume,
        tokenExpiresAt: BigInt(options.tokenExpiresAt ?? 0),
        heartbeatIntervalMs: options.heartbeatIntervalMs ?? 0,
        retentionSeconds: 3600n,
        position: options.position ?? "",
      },
    });
  }

  event(id: string, payload: JsonValue = null, publishedAtMs = 1): this {
    return this.send({
      case: "event",
      value: {
        $typeName: "durable_iterator.v1.Event",
        id,
        payload: { case: "json", value: jsonToProto(payload) },
        publishedAtMs: BigInt(publishedAtMs),
      },
    });
  }

  heartbeat(): this {
    return this.send({ case: "heartbeat", value: { $typeName: "durable_iterator.v1.Heartbeat", serverTimeMs: 1n } });
  }

  tokenExpiring(expiresAt = 0): this {
    return this.send({
      case: "tokenExpiring",
      value: { $typeName: "durable_iterator.v1.TokenExpiring", tokenExpiresAt: BigInt(expiresAt) },
    });
  }

  /** Ends the stream: without an error (OK), or with `code`. */
  end(code?: Code, message = "fake end"): void {
    this.#push({ end: code === undefined ? undefined : new ConnectError(message, code) });
  }

  #push(step: Step): void {
    this.#queue.push(step);
    this.#wake?.();
  }

  /** The handler: sends what the test queued, until it ends the stream or the client leaves. */
  async *serve(): AsyncGenerator<SubscribeResponse> {
    for (;;) {
      while (this.#queue.length === 0) {
        if (this.signal.aborted) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
      const step = this.#queue.shift()!;
      if ("end" in step) {
        if (step.end) throw step.end;
        return;
      }
      yield step.message;
    }
  }
}

export interface SubscribedOptions {
  channel?: string;
  sessionId?: string;
  sessionTicket?: string;
  tokenExpiresAt?: number;
  heartbeatIntervalMs?: number;
  position?: string;
  resume?: {
    requested?: boolean;
    recovered?: boolean;
    failure?: ResumeFailure | number;
    replayed?: number;
    oldestRetainedId?: string;
  };
}

/** A unary call the test answers (or fails) when it likes. */
export class UnaryCall<Req, Res> {
  readonly request: Req;
  readonly signal: AbortSignal;
  readonly #resolve: (response: Res) => void;
  readonly #reject: (error: unknown) => void;
  readonly response: Promise<Res>;

  constructor(request: Req, signal: AbortSignal) {
    this.request = request;
    this.signal = signal;
    let resolve!: (response: Res) => void;
    let reject!: (error: unknown) => void;
    this.response = new Promise<Res>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#resolve = resolve;
    this.#reject = reject;
    signal.addEventListener("abort", () => reject(new ConnectError("client left", Code.Canceled)));
  }

  answer(response: Res): void {
    this.#resolve(response);
  }

  fail(code: Code, message = "fake failure"): void {
    this.#reject(new ConnectError(message, code));
  }
}

/** Calls the fake server has received, in order, and a way to wait for the next one. */
class Inbox<T> {
  readonly all: T[] = [];
  #waiters: Array<() => void> = [];

  push(item: T): void {
    this.all.push(item);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter();
  }

  /** The `n`th call (0-based), once it has arrived. */
  async nth(n: number): Promise<T> {
    while (this.all.length <= n) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.all[n]!;
  }

  get last(): T | undefined {
    return this.all[this.all.length - 1];
  }

  get count(): number {
    return this.all.length;
  }
}

export class FakeServer {
  readonly subscribes = new Inbox<SubscribeCall>();
  readonly refreshes = new Inbox<UnaryCall<RefreshTokenRequest, RefreshTokenResponse>>();
  readonly invokes = new Inbox<UnaryCall<InvokeRequest, InvokeResponse>>();

  readonly transport = createRouterTransport(({ service }) => {
    service(DurableIterator, {
      subscribe: (request: SubscribeRequest, context: HandlerContext) => {
        const call = new SubscribeCall(request, context.signal);
        this.subscribes.push(call);
        return call.serve();
      },
      refreshToken: (request: RefreshTokenRequest, context: HandlerContext) => {
        const call = new UnaryCall<RefreshTokenRequest, RefreshTokenResponse>(request, context.signal);
        this.refreshes.push(call);
        return call.response;
      },
      invoke: (request: InvokeRequest, context: HandlerContext) => {
        const call = new UnaryCall<InvokeRequest, InvokeResponse>(request, context.signal);
        this.invokes.push(call);
        return call.response;
      },
    });
  });

  /** The `n`th Subscribe call (0-based). */
  subscribe(n: number): Promise<SubscribeCall> {
    return this.subscribes.nth(n);
  }
}

export function refreshAnswer(tokenExpiresAt: number): RefreshTokenResponse {
  return create(RefreshTokenResponseSchema, { tokenExpiresAt: BigInt(tokenExpiresAt) });
}

export function invokeAnswer(output: JsonValue): InvokeResponse {
  return create(InvokeResponseSchema, { output: jsonToProto(output) });
}
