/**
 * The admin API, for application servers (Node): publish events and mint tokens with the
 * server's signing key. It is authenticated by the API key (`authorization: Bearer <key>`),
 * which must never reach a browser.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  Code,
  createClient as createConnectClient,
  type Client as ConnectClient,
  type Transport,
} from "@connectrpc/connect";

import { EncodeError, StatusError } from "./errors.js";
import {
  DurableIteratorAdmin,
  PublishRequestSchema,
  StringListSchema,
  type PublishRequest,
} from "./gen/durable_iterator/v1/durable_iterator_pb.js";
import { jsonToProto, toJsonValue, type JsonValue } from "./json.js";
import { createTransport } from "./transport.js";

/** Where the server is, and the API key. */
export interface AdminOptions {
  /** The server, `http://host:port` or `https://host:port`. Required unless `transport` is given. */
  baseUrl?: string | undefined;
  /** The admin API key (`--api-key` / `DURABLE_ITERATOR_API_KEY` of the server). */
  apiKey: string;
  /** The `fetch` to send requests with (Node: one that trusts a private CA). */
  fetch?: typeof globalThis.fetch | undefined;
  /** A ready Connect transport instead. */
  transport?: Transport | undefined;
}

/** One event to publish. */
export interface Publish {
  channel: string;
  /** Any JSON value (as `JSON.stringify` would send it). */
  payload: unknown;
  /** Deliver only to sessions whose tags intersect these. Unset: everyone; `[]`: nobody. */
  tags?: readonly string[] | undefined;
  /** Deliver only to these session ids. Unset: no restriction; `[]`: nobody. */
  targets?: readonly string[] | undefined;
  /** Never deliver to these session ids. */
  exclude?: readonly string[] | undefined;
}

/** What a token grants (see `IssueToken`). */
export interface IssueToken {
  channel: string;
  tags?: readonly string[] | undefined;
  /** Readable by clients: never put secrets here. */
  att?: JsonValue | undefined;
  /** Methods of the channel object the token may call (`path[0]`). */
  rpc?: readonly string[] | undefined;
  /** Lifetime; unset or 0: the server default (86,400 s). */
  ttlSeconds?: number | undefined;
}

/** A token minted by the server. */
export interface IssuedToken {
  token: string;
  /** Unix seconds. */
  expiresAt: number;
}

/**
 * An admin client of the server at `options.baseUrl`.
 *
 * ```ts
 * const admin = createAdmin({ baseUrl: "http://127.0.0.1:50051", apiKey: process.env.API_KEY! });
 * const id = await admin.publish({ channel: "lobby", payload: { text: "hello" } });
 * ```
 */
export function createAdmin(options: AdminOptions): Admin {
  if (typeof options.apiKey !== "string" || options.apiKey === "") {
    throw new TypeError("createAdmin needs apiKey: the server's admin API key");
  }
  const transport =
    options.transport ??
    createTransport({
      baseUrl: options.baseUrl ?? missing(),
      fetch: options.fetch,
    });
  return new Admin(createConnectClient(DurableIteratorAdmin, transport), options.apiKey);
}

/**
 * The admin API (see {@link createAdmin}). A refused call is a `StatusError`; a payload that is
 * not JSON (a `BigInt`, a cycle) an `EncodeError`.
 */
export class Admin {
  readonly #rpc: ConnectClient<typeof DurableIteratorAdmin>;
  readonly #apiKey: string;

  /** @internal Use {@link createAdmin}. */
  constructor(rpc: ConnectClient<typeof DurableIteratorAdmin>, apiKey: string) {
    this.#rpc = rpc;
    this.#apiKey = apiKey;
  }

  /** Publishes one event; resolves with its id once the server has stored it. */
  async publish(event: Publish, options: { signal?: AbortSignal } = {}): Promise<string> {
    const request = publishRequest(event);
    const response = await this.#call(() => this.#rpc.publish(request, this.#options(options.signal)));
    return response.id;
  }

  /**
   * Publishes several events in one call; resolves with their ids, in order, once the server
   * has stored them all. The events of one channel land in order and contiguously; one invalid
   * event refuses the whole call (`INVALID_ARGUMENT`) and nothing is published.
   */
  async publishBatch(events: readonly Publish[], options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const request = { events: events.map(publishRequest) };
    const response = await this.#call(() => this.#rpc.publishBatch(request, this.#options(options.signal)));
    return response.ids;
  }

  /** Mints a token with the server's signing key. */
  async issueToken(grant: IssueToken, options: { signal?: AbortSignal } = {}): Promise<IssuedToken> {
    const att = grant.att === undefined ? undefined : jsonToProto(encode(grant.att, "IssueToken"));
    const request = {
      channel: grant.channel,
      tags: [...(grant.tags ?? [])],
      att,
      rpc: [...(grant.rpc ?? [])],
      ttlSeconds: BigInt(Math.max(0, Math.floor(grant.ttlSeconds ?? 0))),
    };
    const response = await this.#call(() => this.#rpc.issueToken(request, this.#options(options.signal)));
    return { token: response.token, expiresAt: Number(response.expiresAt) };
  }

  #options(signal: AbortSignal | undefined) {
    let headers: Headers;
    try {
      headers = new Headers({ authorization: `Bearer ${this.#apiKey}` });
    } catch {
      throw new StatusError(Code.InvalidArgument, "the API key is not a valid header value");
    }
    return { headers, signal };
  }

  async #call<T>(send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (error) {
      throw StatusError.from(error);
    }
  }
}

function publishRequest(event: Publish): PublishRequest {
  const list = (values: readonly string[] | undefined) =>
    values === undefined ? undefined : create(StringListSchema, { values: [...values] });
  return create(PublishRequestSchema, {
    channel: event.channel,
    payload: { case: "json", value: jsonToProto(encode(event.payload, "Publish")) },
    tags: list(event.tags),
    targets: list(event.targets),
    exclude: [...(event.exclude ?? [])],
  });
}

function encode(value: unknown, call: string): JsonValue {
  try {
    return toJsonValue(value);
  } catch (error) {
    throw new EncodeError(call, error);
  }
}

function missing(): never {
  throw new TypeError(`createAdmin needs baseUrl (e.g. "http://127.0.0.1:50051") or a transport`);
}
