"""``Invoke``: a channel object's method, called with a token (and a session's ticket)."""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

from . import _json
from ._backoff import Backoff
from ._clock import Clock
from ._errors import EncodeError, StatusError
from ._json import JsonValue
from ._policy import invoke_is_retryable
from ._transport import Transport
from .v1 import durable_iterator_pb2 as pb

__all__ = ["Credentials", "MethodPath", "invoke", "method_path"]

#: A method's path: a list of names (``["routerClient", "echo"]``) or the same names joined
#: with dots (``"routerClient.echo"``). ``path[0]`` is what a token's ``rpc`` list allows.
MethodPath = Union[str, Sequence[str]]


@dataclass(frozen=True)
class Credentials:
    """How to authenticate an ``Invoke``: a token, and the session ticket of a subscription if
    the method should see that session as its caller."""

    token: str
    session_ticket: str | None = None

    def __repr__(self) -> str:
        # Tokens are bearer credentials: keep them out of logs and tracebacks.
        ticket = "None" if self.session_ticket is None else "<ticket>"
        return f"Credentials(token=<token>, session_ticket={ticket})"


def method_path(path: MethodPath) -> tuple[str, ...]:
    """The path as a tuple of names; raises ``ValueError`` for an empty path or name."""
    names = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"a method path is one or more non-empty names, not {path!r}")
    return names


def invoke_request(
    credentials: Credentials, path: tuple[str, ...], input: object
) -> pb.InvokeRequest:
    try:
        value = _json.to_proto(input)
    except TypeError as error:  # NotJson is one
        raise EncodeError(".".join(path), str(error)) from None
    request = pb.InvokeRequest(token=credentials.token, path=path, input=value)
    if credentials.session_ticket is not None:
        request.session_ticket = credentials.session_ticket
    return request


async def invoke(
    transport: Transport,
    clock: Clock,
    credentials: Credentials,
    path: MethodPath,
    input: object,
    *,
    retries: int = 0,
    backoff: Backoff = Backoff(),
    random: Callable[[], float] = _random.random,
) -> JsonValue:
    """Sends ``Invoke``; retries (only when asked) the calls refused as ``UNAVAILABLE``, which
    the server did not get to run: a method may not be safe to run twice."""
    names = method_path(path)
    request = invoke_request(credentials, names, input)
    retry = 0
    while True:
        try:
            response = await transport.invoke(request)
        except StatusError as status:
            if retry < retries and invoke_is_retryable(status.code):
                retry += 1
                await clock.sleep_until(clock.now_ms() + backoff.delay_ms(retry, random()))
                continue
            raise
        return _json.from_proto(response.output) if response.HasField("output") else None
