/**
 * What the client does when a `Subscribe` stream ends or cannot be opened: the one place that
 * reads status codes.
 *
 * @module
 */
import { Code } from "@connectrpc/connect";

/**
 * The status of a stream that ended without an error. Connect's `Code` has no member for it
 * (a call that succeeded raises nothing).
 */
export const OK = 0;

/** A gRPC status code, `OK` included. */
export type StatusCode = Code | typeof OK;

/** The client's answer to a status that ended (or refused) a subscription stream. */
export type Disposition =
  /** Transient: reconnect (after the backoff) and resume from the last event id. */
  | "reconnect"
  /**
   * The token was refused (expired, most likely): ask the token provider for a new one, then
   * reconnect. Retrying the stale token could never succeed.
   */
  | "renewToken"
  /** Retrying cannot help, or must not happen: surface the error and end the stream. */
  | "fail";

/** The disposition of a status code on `Subscribe`. */
export function onStatus(code: StatusCode): Disposition {
  switch (code) {
    // Shutdown, transport failures, a slow consumer (the server asks us to resume from the
    // store), deadlines, and cancellations by a proxy on the way.
    case OK:
    case Code.Unavailable:
    case Code.ResourceExhausted:
    case Code.DeadlineExceeded:
    case Code.Internal:
    case Code.Unknown:
    case Code.Canceled:
      return "reconnect";
    case Code.Unauthenticated:
      return "renewToken";
    // ABORTED: the session was resumed on another stream; reconnecting would take it back and
    // two clients would fight over one session. The rest are the request's own fault (bad id,
    // bad channel, refused ticket) or a server that cannot serve it at all.
    case Code.Aborted:
    case Code.InvalidArgument:
    case Code.PermissionDenied:
    case Code.FailedPrecondition:
    case Code.NotFound:
    case Code.AlreadyExists:
    case Code.OutOfRange:
    case Code.Unimplemented:
    case Code.DataLoss:
      return "fail";
    default:
      // A code from outside the table (a newer protocol): nothing says retrying would help.
      return "fail";
  }
}

/**
 * Whether a failed `Invoke` may be sent again (when the caller asked for retries): only when
 * the server did not get to run it, or says it is going away.
 */
export function invokeIsRetryable(code: StatusCode): boolean {
  return code === Code.Unavailable;
}

const CANONICAL_NAMES: Record<number, string> = {
  [OK]: "OK",
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The gRPC canonical name of a code (`PERMISSION_DENIED`), what the command line prints. */
export function codeName(code: StatusCode): string {
  return CANONICAL_NAMES[code] ?? `CODE_${code}`;
}
