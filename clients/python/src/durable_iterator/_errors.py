"""What a client call or a subscription can fail with: the Rust ``ClientError`` variants, as
exceptions under one base class."""

from __future__ import annotations

import grpc

__all__ = [
    "ClientError",
    "DecodeError",
    "EncodeError",
    "InvalidEndpointError",
    "RetriesExhaustedError",
    "StatusError",
    "TokenProviderError",
]


class ClientError(Exception):
    """Base of every error this package raises on purpose."""

    @property
    def code(self) -> grpc.StatusCode | None:
        """The gRPC status code behind the error, if the server (or the transport) gave one."""
        return None


class StatusError(ClientError):
    """The server refused the call, or the stream ended with a status that retrying cannot
    fix (e.g. ``ABORTED``: the session was resumed on another stream)."""

    def __init__(self, code: grpc.StatusCode, message: str = "") -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self._code = code
        #: The status message (gRPC "details").
        self.message = message

    @property
    def code(self) -> grpc.StatusCode:
        return self._code

    def __repr__(self) -> str:
        return f"StatusError({self._code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusError):
            return NotImplemented
        return (self._code, self.message) == (other._code, other.message)

    def __hash__(self) -> int:
        return hash((self._code, self.message))


class TokenProviderError(ClientError):
    """The token provider (``get_token``) failed this many times in a row; its last exception
    is ``__cause__``."""

    def __init__(self, attempts: int, source: BaseException) -> None:
        super().__init__(f"the token provider failed {attempts} times in a row: {source!r}")
        self.attempts = attempts
        self.source = source
        self.__cause__ = source


class RetriesExhaustedError(ClientError):
    """The reconnect attempts allowed by ``Backoff.max_attempts`` all failed; ``last`` is the
    status of the last one."""

    def __init__(self, attempts: int, last: StatusError) -> None:
        super().__init__(
            f"gave up after {attempts} reconnect attempts; last: {last.code.name}: {last.message}"
        )
        self.attempts = attempts
        self.last = last

    @property
    def code(self) -> grpc.StatusCode:
        return self.last.code


class InvalidEndpointError(ClientError, ValueError):
    """The server address is not ``host:port``, ``http://host[:port]`` or
    ``https://host[:port]``, or the CA certificate cannot be read."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"invalid server address {endpoint!r}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class EncodeError(ClientError, TypeError):
    """An input (a method's, or a published payload) is not a JSON value."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"cannot encode the input of {method}: {reason}")
        self.method = method
        self.reason = reason


class DecodeError(ClientError, TypeError):
    """A method's output did not have the declared type."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"the output of {method} is not of the declared type: {reason}")
        self.method = method
        self.reason = reason
