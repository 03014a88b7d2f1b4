"""What the client does when a ``Subscribe`` stream ends or cannot be opened: the one place
that reads status codes (the dispositions table of the shared client design)."""

from __future__ import annotations

import enum

import grpc

__all__ = ["Disposition", "invoke_is_retryable", "on_status"]


class Disposition(enum.Enum):
    """The client's answer to a status that ended (or refused) a subscription stream."""

    #: Transient: reconnect (after the backoff) and resume from the last event id.
    RECONNECT = "reconnect"
    #: The token was refused (expired, most likely): ask the token provider for a new one, then
    #: reconnect. Retrying the stale token could never succeed.
    RENEW_TOKEN = "renew_token"
    #: Retrying cannot help, or must not happen: raise the error and end the subscription.
    FAIL = "fail"


_C = grpc.StatusCode

_DISPOSITIONS: dict[grpc.StatusCode, Disposition] = {
    # Shutdown, transport failures (gRPC reports them as UNAVAILABLE, UNKNOWN or INTERNAL), a
    # slow consumer (the server asks us to resume from the store), deadlines, and cancellations
    # by a proxy on the way.
    _C.OK: Disposition.RECONNECT,
    _C.UNAVAILABLE: Disposition.RECONNECT,
    _C.RESOURCE_EXHAUSTED: Disposition.RECONNECT,
    _C.DEADLINE_EXCEEDED: Disposition.RECONNECT,
    _C.INTERNAL: Disposition.RECONNECT,
    _C.UNKNOWN: Disposition.RECONNECT,
    _C.CANCELLED: Disposition.RECONNECT,
    _C.UNAUTHENTICATED: Disposition.RENEW_TOKEN,
    # ABORTED: the session was resumed on another stream; reconnecting would take it back and
    # two clients would fight over one session. The rest are the request's own fault (bad id,
    # bad channel, refused ticket) or a server that cannot serve it at all.
    _C.ABORTED: Disposition.FAIL,
    _C.INVALID_ARGUMENT: Disposition.FAIL,
    _C.PERMISSION_DENIED: Disposition.FAIL,
    _C.FAILED_PRECONDITION: Disposition.FAIL,
    _C.NOT_FOUND: Disposition.FAIL,
    _C.ALREADY_EXISTS: Disposition.FAIL,
    _C.OUT_OF_RANGE: Disposition.FAIL,
    _C.UNIMPLEMENTED: Disposition.FAIL,
    _C.DATA_LOSS: Disposition.FAIL,
}


def on_status(code: grpc.StatusCode) -> Disposition:
    """The disposition of a status code that ended or refused a ``Subscribe`` stream."""
    return _DISPOSITIONS[code]


def invoke_is_retryable(code: grpc.StatusCode) -> bool:
    """Whether a failed ``Invoke`` may be sent again (when the caller asked for retries): only
    when the server did not get to run it, or says it is going away."""
    return code is grpc.StatusCode.UNAVAILABLE
