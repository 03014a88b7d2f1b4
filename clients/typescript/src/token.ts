/**
 * Where a subscription gets its tokens, and what the client may read of them (it holds no key,
 * so it never verifies one: it reads the claims to tell whether a new token can replace the
 * current one on the live stream).
 *
 * @module
 */
import type { JsonValue } from "./json.js";

/** What a token provider is given: abort its work when `signal` aborts (the subscription closed). */
export interface TokenRequest {
  readonly signal: AbortSignal;
}

/**
 * Returns a fresh token each time it is asked: at the first subscribe, before the current token
 * expires (with `refreshBeforeExpirySeconds`), and when a reconnect was refused as
 * unauthenticated. In a browser it asks the app server, which holds the signing key:
 *
 * ```ts
 * const getToken = ({ signal }) => fetch("/token", { signal }).then((r) => r.text());
 * ```
 *
 * A rejection counts as a failure: the subscription asks again after a patient backoff and
 * fails with a `TokenProviderError` after `tokenAttempts` failures in a row.
 */
export type TokenProvider = (request: TokenRequest) => Promise<string> | string;

/**
 * The claims of a token: `chn` (channel), `tags`, `att` (any JSON, readable by clients),
 * `rpc` (methods the holder may call), `iat` and `exp` (Unix seconds).
 */
export interface TokenClaims {
  chn: string;
  tags?: string[] | undefined;
  att?: JsonValue | undefined;
  rpc?: string[] | undefined;
  iat: number;
  exp: number;
}

/**
 * The claims of `token`, read without verifying it; `undefined` when it is not a token of this
 * shape (`JSON(payload) + "." + signature`, with `chn`, `iat` and `exp`).
 */
export function unverifiedClaims(token: string): TokenClaims | undefined {
  // The payload may contain dots (a channel "a.b", an attachment): the signature has none.
  const dot = token.lastIndexOf(".");
  if (dot < 0) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(token.slice(0, dot));
  } catch {
    return undefined;
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  const claims = payload as Record<string, unknown>;
  if (typeof claims.chn !== "string" || !isSeconds(claims.iat) || !isSeconds(claims.exp)) {
    return undefined;
  }
  const strings = (value: unknown): string[] | undefined | null => {
    if (value === undefined || value === null) return undefined;
    return Array.isArray(value) && value.every((v) => typeof v === "string") ? value : null;
  };
  const tags = strings(claims.tags);
  const rpc = strings(claims.rpc);
  if (tags === null || rpc === null) return undefined;
  return {
    chn: claims.chn,
    tags,
    att: claims.att as JsonValue | undefined,
    rpc,
    iat: claims.iat,
    exp: claims.exp,
  };
}

function isSeconds(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

/**
 * Whether `next` can replace `current` on the live stream (`RefreshToken`), or needs a
 * reconnect: the same channel and the same set of tags (order and repeats aside), as the
 * server judges it. A token the client cannot read reconnects: the safe choice.
 */
export function refreshableInPlace(current: string, next: string): boolean {
  const a = unverifiedClaims(current);
  const b = unverifiedClaims(next);
  if (!a || !b || a.chn !== b.chn) return false;
  const setA = new Set(a.tags ?? []);
  const setB = new Set(b.tags ?? []);
  return setA.size === setB.size && [...setA].every((tag) => setB.has(tag));
}

/**
 * Always the same token: for scripts and tokens that outlive the subscription. Once it has
 * expired, a reconnect refused as unauthenticated ends the subscription with that error.
 */
export function fixedToken(token: string): TokenProvider {
  return () => token;
}

/**
 * Tokens from an HTTP `GET` of `url`: the response body, trimmed, is the token. Any status but
 * 2xx is a provider failure (the subscription asks again after a patient backoff).
 */
export function tokenFromUrl(
  url: string | URL,
  options: { fetch?: typeof globalThis.fetch; init?: RequestInit } = {},
): TokenProvider {
  const fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  return async ({ signal }) => {
    const response = await fetchFn(url, { ...options.init, method: "GET", signal });
    const body = await response.text();
    if (!response.ok) {
      throw new Error(`GET ${String(url)} answered ${response.status}: ${body.trim().slice(0, 200)}`);
    }
    return body.trim();
  };
}
