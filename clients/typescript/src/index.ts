/**
 * `@durable-iterator/client`: the TypeScript client of durable-iterator, for browsers and
 * Node 20+ over grpc-web.
 *
 * ```ts
 * import { createClient, method, decode } from "@durable-iterator/client";
 *
 * const client = createClient({ baseUrl: "http://127.0.0.1:50051" });
 * const sub = client.subscribe({
 *   getToken: ({ signal }) => fetch("/token", { signal }).then((r) => r.text()),
 *   refreshBeforeExpirySeconds: 600,
 * });
 * const echo = method<{ text: string }, string>(["routerClient", "echo"], { decode: decode.string });
 * for await (const item of sub) {
 *   if (item.kind === "event") console.log(item.id, item.payload);
 *   else console.warn("history lost:", item.failure); // item.kind === "resumed"
 * }
 * ```
 *
 * Node-only helpers (minting tokens, a private CA) are in `@durable-iterator/client/node`.
 *
 * @module
 */
export { Code } from "@connectrpc/connect";

export { createAdmin, Admin, type AdminOptions, type IssueToken, type IssuedToken, type Publish } from "./admin.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { createClient, Client, type ClientOptions } from "./client.js";
export { ManualClock, SystemClock, systemClock, type Clock } from "./clock.js";
export { decode, method, type InputArgs, type Method } from "./contract.js";
export {
  ClientError,
  DecodeError,
  EncodeError,
  InvalidEndpointError,
  RetriesExhaustedError,
  StatusError,
  TokenProviderError,
} from "./errors.js";
export { eventToJson, reportToJson, type Event, type ResumeFailure, type ResumeReport, type SubscriptionItem } from "./items.js";
export type { Credentials, InvokeOptions } from "./invoke.js";
export { protoToJson, jsonToProto, toJsonValue, type JsonValue } from "./json.js";
export { codeName, invokeIsRetryable, OK, onStatus, type Disposition, type StatusCode } from "./policy.js";
export {
  Subscription,
  type ConnectionState,
  type Progress,
  type SubscribeOptions,
} from "./subscription.js";
export {
  fixedToken,
  refreshableInPlace,
  tokenFromUrl,
  unverifiedClaims,
  type TokenClaims,
  type TokenProvider,
  type TokenRequest,
} from "./token.js";
