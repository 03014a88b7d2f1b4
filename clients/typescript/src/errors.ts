/**
 * What a client call or a subscription can fail with: one class per kind of failure, all
 * {@link ClientError}s, so `catch (e) { if (e instanceof RetriesExhaustedError) ... }` and
 * `e.code` work the same way everywhere.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";

import { codeName } from "./policy.js";

/** The base of every error this package throws. */
export abstract class ClientError extends Error {
  /** The gRPC status code behind the error, if the server (or the transport) gave one. */
  abstract readonly code: Code | undefined;
}

/**
 * The server refused the call, or the stream ended with a status that retrying cannot fix
 * (e.g. `ABORTED`: the session was resumed on another stream).
 */
export class StatusError extends ClientError {
  override readonly name = "StatusError";
  readonly code: Code;
  /** The server's message, without the code in front. */
  readonly rawMessage: string;

  constructor(code: Code, rawMessage: string, options?: { cause?: unknown }) {
    super(`${codeName(code)}: ${rawMessage}`, options);
    this.code = code;
    this.rawMessage = rawMessage;
  }

  /** The status of any failure of a call: a Connect error keeps its code, others are UNKNOWN. */
  static from(error: unknown): StatusError {
    if (error instanceof StatusError) return error;
    const connect = ConnectError.from(error);
    return new StatusError(connect.code, connect.rawMessage, { cause: error });
  }
}

/** The token provider (`getToken`) failed this many times in a row. */
export class TokenProviderError extends ClientError {
  override readonly name = "TokenProviderError";
  readonly code = undefined;
  readonly attempts: number;

  constructor(attempts: number, cause: unknown) {
    super(`the token provider failed ${attempts} times in a row: ${describe(cause)}`, { cause });
    this.attempts = attempts;
  }
}

/** The reconnect attempts allowed by `backoff.maxAttempts` all failed. */
export class RetriesExhaustedError extends ClientError {
  override readonly name = "RetriesExhaustedError";
  readonly attempts: number;
  /** The status that ended the last attempt. */
  readonly last: StatusError;

  constructor(attempts: number, last: StatusError) {
    super(`gave up after ${attempts} reconnect attempts; last: ${last.message}`, { cause: last });
    this.attempts = attempts;
    this.last = last;
  }

  /** The code of the last attempt's status. */
  get code(): Code {
    return this.last.code;
  }
}

/** The server address is not an `http://` or `https://` URL. */
export class InvalidEndpointError extends ClientError {
  override readonly name = "InvalidEndpointError";
  readonly code = undefined;
  readonly endpoint: string;

  constructor(endpoint: string, reason: string) {
    super(`invalid server address ${JSON.stringify(endpoint)}: ${reason}`);
    this.endpoint = endpoint;
  }
}

/** A method input could not be encoded as JSON (a `BigInt`, a cycle, a function). */
export class EncodeError extends ClientError {
  override readonly name = "EncodeError";
  readonly code = undefined;
  /** The method's path, dotted (`routerClient.echo`). */
  readonly method: string;

  constructor(method: string, cause: unknown) {
    super(`cannot encode the input of ${method}: ${describe(cause)}`, { cause });
    this.method = method;
  }
}

/** A method output did not have the declared type (its `decode` refused it). */
export class DecodeError extends ClientError {
  override readonly name = "DecodeError";
  readonly code = undefined;
  /** The method's path, dotted (`routerClient.echo`). */
  readonly method: string;

  constructor(method: string, cause: unknown) {
    super(`the output of ${method} is not of the declared type: ${describe(cause)}`, { cause });
    this.method = method;
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}
