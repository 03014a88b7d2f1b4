/**
 * Minting tokens with the signing key, in Node (`node:crypto`): for trusted processes only (the
 * command line, tests, an app server). A browser never holds the key: it asks the app server.
 *
 * Tokens are byte-compatible with oRPC's and the server's own:
 * `JSON(payload) + "." + base64url_nopad(HMAC-SHA256(key, JSON(payload)))`, the payload's
 * fields in the order chn, tags, att, rpc, iat, exp, absent ones omitted, compact JSON.
 *
 * @module
 */
import { createHmac } from "node:crypto";

import { systemClock, type Clock } from "./clock.js";
import type { JsonValue } from "./json.js";
import type { TokenClaims, TokenProvider } from "./token.js";

/** Signs `claims` with `signingKey`. */
export function signToken(signingKey: string, claims: TokenClaims): string {
  const payload: Record<string, unknown> = { chn: claims.chn };
  if (claims.tags !== undefined) payload.tags = claims.tags;
  if (claims.att !== undefined) payload.att = claims.att;
  if (claims.rpc !== undefined) payload.rpc = claims.rpc;
  payload.iat = claims.iat;
  payload.exp = claims.exp;
  const json = JSON.stringify(payload);
  const signature = createHmac("sha256", signingKey).update(json, "utf8").digest("base64url");
  return `${json}.${signature}`;
}

/** What {@link signingProvider} mints. */
export interface SigningProviderOptions {
  /**
   * The signing key, or the server's comma-separated list (`DURABLE_ITERATOR_SIGNING_KEY`):
   * tokens are signed with the first, as the server does.
   */
  signingKey: string;
  channel: string;
  tags?: string[] | undefined;
  att?: JsonValue | undefined;
  rpc?: string[] | undefined;
  /** Lifetime of each token, in seconds. Default 3,600. */
  ttlSeconds?: number | undefined;
  /** Where `iat` comes from (default: the system clock). */
  clock?: Clock | undefined;
}

/** A provider that mints each token itself, issued at the clock's now. */
export function signingProvider(options: SigningProviderOptions): TokenProvider {
  const key = firstKey(options.signingKey);
  const ttl = Math.floor(options.ttlSeconds ?? 3_600);
  if (!(ttl > 0)) throw new RangeError(`ttlSeconds must be > 0, not ${options.ttlSeconds}`);
  const clock = options.clock ?? systemClock;
  return () => {
    const iat = Math.floor(clock.nowMs() / 1000);
    return signToken(key, {
      chn: options.channel,
      tags: options.tags,
      att: options.att,
      rpc: options.rpc,
      iat,
      exp: iat + ttl,
    });
  };
}

/** The first key of a comma-separated list, as the server signs with it. */
export function firstKey(keys: string): string {
  const key = keys.split(",")[0]?.trim() ?? "";
  if (key === "") throw new TypeError("the signing key is empty");
  return key;
}
