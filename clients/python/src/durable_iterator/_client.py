"""A connection to a durable-iterator server: subscriptions and ``Invoke`` calls."""

from __future__ import annotations

import random as _random
import weakref
from collections.abc import Callable
from typing import TypeVar

import grpc.aio

from ._backoff import Backoff
from ._clock import Clock, SystemClock
from ._endpoint import CaCert, open_channel, parse_endpoint
from ._errors import ClientError
from ._invoke import Credentials, MethodPath
from ._invoke import invoke as _invoke
from ._json import JsonValue
from ._method import Method
from ._subscription import Progress, SubscribeOptions, Subscription
from ._token import TokenProvider
from ._transport import GrpcTransport, SubscribeCall
from .v1 import durable_iterator_pb2 as pb

__all__ = ["DEFAULT_SERVER", "Client"]

#: Where the server listens by default.
DEFAULT_SERVER = "http://127.0.0.1:50051"

_I = TypeVar("_I")
_O = TypeVar("_O")


class _ClientTransport:
    """The client's :class:`GrpcTransport`, reached on each call: the channel is opened on first
    use, in the running event loop, and a closed client refuses calls."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def subscribe(self, request: pb.SubscribeRequest) -> SubscribeCall:
        return self._client._grpc().subscribe(request)

    async def refresh_token(self, request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
        return await self._client._grpc().refresh_token(request)

    async def invoke(self, request: pb.InvokeRequest) -> pb.InvokeResponse:
        return await self._client._grpc().invoke(request)


class Client:
    """A connection to the server at ``server``: ``host:port`` or ``http://host:port``
    (plaintext), ``https://host:port`` (TLS, checked against the system roots and
    ``ca_cert``, a PEM file path or PEM bytes).

    Everything made from one client shares one HTTP/2 connection. gRPC connects on first use
    and reconnects by itself, so a server that is down now is no error here; a malformed
    address raises :class:`InvalidEndpointError` at once. Use it as ``async with Client(...) as
    client`` or call :meth:`close`: closing ends the subscriptions made from it.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        ca_cert: CaCert | None = None,
        clock: Clock | None = None,
        channel_options: tuple[tuple[str, int | str], ...] = (),
    ) -> None:
        parse_endpoint(server)  # a malformed address fails here, not at the first call
        self.server = server
        self._ca_cert = ca_cert
        self._channel_options = channel_options
        self._channel: grpc.aio.Channel | None = None
        self._transport: GrpcTransport | None = None
        self._clock: Clock = clock or SystemClock()
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False

    @classmethod
    def from_channel(cls, channel: grpc.aio.Channel, *, clock: Clock | None = None) -> Client:
        """A client on an existing ``grpc.aio`` channel (custom credentials, interceptors, a
        connection shared with other stubs). :meth:`close` closes it."""
        client = cls.__new__(cls)
        client.server = "<channel>"
        client._ca_cert = None
        client._channel_options = ()
        client._channel = channel
        client._transport = GrpcTransport(channel)
        client._clock = clock or SystemClock()
        client._subscriptions = weakref.WeakSet()
        client._closed = False
        return client

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying ``grpc.aio`` channel (opened on first use, in the running loop)."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._channel is None:
            # Opened lazily: a grpc.aio channel belongs to the event loop it was made in, and a
            # client may be constructed before the loop runs.
            self._channel = open_channel(
                self.server, ca_cert=self._ca_cert, options=self._channel_options
            )
            self._transport = GrpcTransport(self._channel)
        return self._channel

    def _grpc(self) -> GrpcTransport:
        self.channel
        assert self._transport is not None
        return self._transport

    @property
    def clock(self) -> Clock:
        return self._clock

    def subscribe(
        self,
        get_token: TokenProvider,
        *,
        last_event_id: str | None = None,
        session_ticket: str | None = None,
        backoff: Backoff | None = None,
        refresh_before_expiry: float | None = None,
        liveness_intervals: float | None = 2.5,
        handshake_timeout: float = 30.0,
        token_attempts: int = 5,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Subscription:
        """Subscribes with tokens from ``get_token``: an async iterator of :class:`Event` and
        :class:`Resumed` items that reconnects and resumes by itself (see
        :class:`Subscription`). Nothing is sent until the first item is asked for.

        ``get_token`` is a sync or async callable returning a token string; it is called at the
        first subscribe, ``refresh_before_expiry`` seconds before the token expires (then the
        new token is swapped in on the live stream), and when a reconnect was refused as
        ``UNAUTHENTICATED``. ``last_event_id`` and ``session_ticket`` resume an earlier
        subscription. ``on_progress`` is called with each new :class:`Progress` (a new
        connection, a refresh, a change of state); it must not block.

        Options and defaults are those of :class:`SubscribeOptions` (durations in seconds).
        """
        options = SubscribeOptions(
            last_event_id=last_event_id,
            session_ticket=session_ticket,
            backoff=backoff or Backoff(),
            refresh_before_expiry=refresh_before_expiry,
            liveness_intervals=liveness_intervals,
            handshake_timeout=handshake_timeout,
            token_attempts=token_attempts,
        )
        if self._closed:
            raise ClientError("the client is closed")
        subscription = Subscription(
            _ClientTransport(self), get_token, options, clock=self._clock, on_progress=on_progress
        )
        self._subscriptions.add(subscription)
        return subscription

    async def invoke(
        self,
        credentials: Credentials,
        path: MethodPath,
        input: object = None,
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
    ) -> JsonValue:
        """Calls the channel object's method at ``path`` (``["routerClient", "echo"]`` or
        ``"routerClient.echo"``) with a JSON input; returns its JSON output.

        ``credentials`` carries the token, and a subscription's session ticket if the method
        should see that session as its caller (:attr:`Subscription.credentials`; or call
        :meth:`Subscription.invoke`). ``retries`` resends calls refused as ``UNAVAILABLE``
        (only those, and only when asked: a method may not be safe to run twice). Raises
        :class:`StatusError` when the call is refused.
        """
        return await _invoke(
            self._grpc(),
            self._clock,
            credentials,
            path,
            input,
            retries=retries,
            backoff=backoff or Backoff(),
            random=_random.random,
        )

    async def call(
        self,
        credentials: Credentials,
        method: Method[_I, _O],
        input: _I,
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
    ) -> _O:
        """Calls a typed method (see :class:`Method`): the input is encoded and the output
        checked as the method declares (:class:`EncodeError`, :class:`DecodeError`)."""
        encoded = method.encode_input(input)
        output = await self.invoke(
            credentials, method.path, encoded, retries=retries, backoff=backoff
        )
        return method.decode_output(output)

    async def close(self) -> None:
        """Closes the subscriptions made from this client, then the connection. Idempotent."""
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Client({self.server!r})"
