/**
 * The client: one transport to a durable-iterator server, shared by every subscription and
 * call made through it.
 *
 * @module
 */
import { createClient as createConnectClient, type Transport } from "@connectrpc/connect";

import { systemClock, type Clock } from "./clock.js";
import type { InputArgs, Method } from "./contract.js";
import { DurableIterator } from "./gen/durable_iterator/v1/durable_iterator_pb.js";
import { invoke, typedCall, type Credentials, type InvokeOptions, type Rpc } from "./invoke.js";
import type { JsonValue } from "./json.js";
import { Subscription, type SubscribeOptions } from "./subscription.js";
import { createTransport } from "./transport.js";

/** Where the server is, and how time passes. */
export interface ClientOptions {
  /**
   * The server, `http://host:port` or `https://host:port` (grpc-web on the server's one port).
   * Required unless `transport` is given.
   */
  baseUrl?: string | undefined;
  /** The `fetch` to send requests with (Node: one that trusts a private CA). */
  fetch?: typeof globalThis.fetch | undefined;
  /** A ready Connect transport instead (tests, a custom interceptor chain). */
  transport?: Transport | undefined;
  /** The clock of backoff, refresh, liveness and handshake deadlines (tests: a `ManualClock`). */
  clock?: Clock | undefined;
}

/**
 * A client of the server at `options.baseUrl`. Nothing connects until a call is made, so a
 * server that is down now is no error here; an address that is not an http(s) URL is
 * (`InvalidEndpointError`, thrown at once).
 *
 * ```ts
 * const client = createClient({ baseUrl: "http://127.0.0.1:50051" });
 * const sub = client.subscribe({ getToken: () => fetch("/token").then((r) => r.text()) });
 * for await (const item of sub) if (item.kind === "event") console.log(item.payload);
 * ```
 */
export function createClient(options: ClientOptions): Client {
  const transport =
    options.transport ??
    createTransport({ baseUrl: options.baseUrl ?? missing("baseUrl"), fetch: options.fetch });
  return new Client(createConnectClient(DurableIterator, transport), options.clock ?? systemClock);
}

/** A connection to a durable-iterator server (see {@link createClient}). */
export class Client {
  readonly #rpc: Rpc;
  readonly #clock: Clock;

  /** @internal Use {@link createClient}. */
  constructor(rpc: Rpc, clock: Clock) {
    this.#rpc = rpc;
    this.#clock = clock;
  }

  /** The clock this client's deadlines run on. */
  get clock(): Clock {
    return this.#clock;
  }

  /**
   * Subscribes with tokens from `options.getToken`: an `AsyncIterable` of events and resume
   * reports that reconnects, resumes and refreshes by itself. Nothing is sent until the first
   * `next()` (the first turn of a `for await`).
   */
  subscribe(options: SubscribeOptions): Subscription {
    return new Subscription({ rpc: this.#rpc, clock: this.#clock }, options);
  }

  /**
   * Calls the channel object's method at `path` with a JSON input, authenticated by
   * `credentials` (a token; with a session ticket the method sees that session as its caller).
   */
  invoke(
    credentials: Credentials,
    path: readonly string[],
    input?: unknown,
    options?: InvokeOptions,
  ): Promise<JsonValue> {
    return invoke(this.#rpc, this.#clock, credentials, path, input, options);
  }

  /**
   * Calls a typed method: the input and output types are the ones `method` declares, so a call
   * with the wrong types does not compile.
   */
  call<I, O>(
    credentials: Credentials,
    method: Method<I, O>,
    ...args: [...InputArgs<NoInfer<I>>, options?: InvokeOptions]
  ): Promise<O> {
    const [input, options] = args as unknown as [I, InvokeOptions | undefined];
    return typedCall(method, input, (json) => this.invoke(credentials, method.path, json, options));
  }
}

function missing(name: string): never {
  throw new TypeError(`createClient needs ${name} (e.g. "http://127.0.0.1:50051") or a transport`);
}
