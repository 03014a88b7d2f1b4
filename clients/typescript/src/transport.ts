/**
 * The wire: a grpc-web transport over `fetch` (browsers and Node 20+), and the one rule that
 * makes its failures read like the other clients': a request that never reached the server is
 * `UNAVAILABLE`.
 *
 * @module
 */
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { InvalidEndpointError } from "./errors.js";

/** What the client needs to reach a server. */
export interface TransportOptions {
  /** `http://host:port` or `https://host:port` (a path prefix is kept, for a proxy). */
  baseUrl: string;
  /**
   * The `fetch` to send requests with (default: `globalThis.fetch`). In Node, give one that
   * trusts a private CA (see `fetchWithCa` in `@durable-iterator/client/node`).
   */
  fetch?: typeof globalThis.fetch | undefined;
}

/** `baseUrl` checked: an absolute `http:` or `https:` URL. */
export function checkEndpoint(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new InvalidEndpointError(baseUrl, "not an absolute URL (e.g. http://127.0.0.1:50051)");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidEndpointError(baseUrl, `the scheme must be http or https, not ${url.protocol.replace(/:$/, "")}`);
  }
  return url;
}

/** A grpc-web transport (binary format) to `baseUrl`. */
export function createTransport(options: TransportOptions): Transport {
  const url = checkEndpoint(options.baseUrl);
  const inner = options.fetch;
  // Looked up at call time and called on globalThis: a detached `window.fetch` throws
  // "Illegal invocation" in browsers.
  const fetchFn: typeof globalThis.fetch = async (input, init) => {
    try {
      return await (inner ? inner(input, init) : globalThis.fetch(input, init));
    } catch (error) {
      // An abort is the caller's own: Connect reports it as CANCELED.
      if (init?.signal?.aborted) throw error;
      // fetch rejects (a TypeError) only when no response arrived: connection refused,
      // reset, DNS, TLS, CORS. The server did not run the call; say so as gRPC would.
      throw new ConnectError(`cannot reach ${url.origin}: ${describe(error)}`, Code.Unavailable, undefined, undefined, error);
    }
  };
  return createGrpcWebTransport({
    baseUrl: url.href.replace(/\/$/, ""),
    useBinaryFormat: true,
    fetch: fetchFn,
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    // Node's fetch says "fetch failed" and puts the reason (ECONNREFUSED ...) in `cause`.
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message} (${cause.message})` : error.message;
  }
  return String(error);
}
