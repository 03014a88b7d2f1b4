/**
 * `Invoke`: calling a method of the channel's object, untyped (JSON in, JSON out) and typed
 * (through a {@link Method} descriptor).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { Client as ConnectClient } from "@connectrpc/connect";

import { Backoff, type BackoffOptions } from "./backoff.js";
import type { Clock } from "./clock.js";
import { methodName, type Method } from "./contract.js";
import { DecodeError, EncodeError, StatusError } from "./errors.js";
import { DurableIterator, InvokeRequestSchema } from "./gen/durable_iterator/v1/durable_iterator_pb.js";
import { jsonToProto, protoToJson, toJsonValue, type JsonValue } from "./json.js";
import { invokeIsRetryable } from "./policy.js";
import { anySignal, waitAny } from "./signals.js";

/** The generated Connect client of the `DurableIterator` service. */
export type Rpc = ConnectClient<typeof DurableIterator>;

/**
 * How to authenticate an `Invoke`: a token, and the session ticket of a subscription if the
 * method should see that session as its caller.
 */
export interface Credentials {
  readonly token: string;
  readonly sessionTicket: string | undefined;
}

/**
 * Retries of `Invoke` calls. Off by default: a method may not be safe to run twice, so only
 * calls refused as `UNAVAILABLE` (not run, or the server going away) are retried, and only when
 * asked.
 */
export interface InvokeOptions {
  /** Retries after the first attempt (default 0). */
  retries?: number;
  /** The schedule of those retries (first at once, then 1 s .. 10 s with full jitter). */
  backoff?: BackoffOptions;
  /** Aborting it cancels the call (`StatusError` with code `Canceled`). */
  signal?: AbortSignal;
}

/** Sends `Invoke` with `input` (a JSON value) and returns the output as a JSON value. */
export async function invoke(
  rpc: Rpc,
  clock: Clock,
  credentials: Credentials,
  path: readonly string[],
  input: unknown,
  options: InvokeOptions = {},
): Promise<JsonValue> {
  let json: JsonValue;
  try {
    json = toJsonValue(input);
  } catch (error) {
    throw new EncodeError(methodName(path), error);
  }
  const request = create(InvokeRequestSchema, {
    token: credentials.token,
    sessionTicket: credentials.sessionTicket,
    path: [...path],
    input: jsonToProto(json),
  });
  const retries = options.retries ?? 0;
  const backoff = new Backoff(options.backoff);
  for (let retry = 0; ; ) {
    try {
      const response = await rpc.invoke(request, { signal: options.signal });
      return protoToJson(response.output);
    } catch (error) {
      const status = StatusError.from(error);
      if (retry >= retries || !invokeIsRetryable(status.code) || options.signal?.aborted) throw status;
      retry += 1;
      const until = clock.nowMs() + backoff.randomDelay(retry);
      const { signal, release } = anySignal(options.signal);
      try {
        await waitAny(clock, signal, [], [until]);
      } finally {
        release();
      }
      if (options.signal?.aborted) throw status;
    }
  }
}

/** Runs `send` with `method`'s input encoded, and decodes its output as `method` declares. */
export async function typedCall<I, O>(
  method: Method<I, O>,
  input: I,
  send: (input: JsonValue) => Promise<JsonValue>,
): Promise<O> {
  let json: JsonValue;
  try {
    json = toJsonValue(input);
  } catch (error) {
    throw new EncodeError(methodName(method.path), error);
  }
  const output = await send(json);
  if (!method.decode) return output as O;
  try {
    return method.decode(output);
  } catch (error) {
    throw new DecodeError(methodName(method.path), error);
  }
}
