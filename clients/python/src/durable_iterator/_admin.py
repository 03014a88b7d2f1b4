"""The admin API (``DurableIteratorAdmin``): what application servers call with the API key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc.aio

from . import _json
from ._client import DEFAULT_SERVER
from ._endpoint import CaCert, open_channel, parse_endpoint
from ._errors import EncodeError
from ._json import JsonValue
from ._transport import status_error
from .v1 import durable_iterator_pb2 as pb
from .v1 import durable_iterator_pb2_grpc as pb_grpc

__all__ = ["Admin", "IssuedToken", "Publish"]


@dataclass(frozen=True)
class Publish:
    """One event to publish (see :meth:`Admin.publish_batch`)."""

    channel: str
    #: The event, as subscribers receive it: any JSON value.
    payload: JsonValue
    #: Deliver only to sessions whose token tags intersect these. ``None``: everyone; empty:
    #: nobody.
    tags: Sequence[str] | None = None
    #: Deliver only to these session ids (AND with tags). ``None``: no restriction; empty:
    #: nobody.
    targets: Sequence[str] | None = None
    #: Never deliver to these session ids.
    exclude: Sequence[str] = field(default_factory=tuple)

    def to_proto(self) -> pb.PublishRequest:
        try:
            payload = _json.to_proto(self.payload)
        except TypeError as error:
            raise EncodeError(f"the payload published to {self.channel!r}", str(error)) from None
        request = pb.PublishRequest(channel=self.channel, json=payload, exclude=list(self.exclude))
        if self.tags is not None:
            request.tags.SetInParent()
            request.tags.values.extend(self.tags)
        if self.targets is not None:
            request.targets.SetInParent()
            request.targets.values.extend(self.targets)
        return request


@dataclass(frozen=True)
class IssuedToken:
    """A token minted by the server (:meth:`Admin.issue_token`)."""

    token: str
    #: Unix seconds.
    expires_at: int

    def __repr__(self) -> str:
        return f"IssuedToken(token=<token>, expires_at={self.expires_at})"


class Admin:
    """The admin API of the server at ``server`` (addresses as for :class:`Client`),
    authenticated with ``api_key`` (sent as ``authorization: Bearer <api_key>``).

    For application servers: publish events, mint tokens. Raises :class:`StatusError` when the
    server refuses a call (``UNAUTHENTICATED`` for a wrong key, ``INVALID_ARGUMENT`` for a bad
    event). Use it as ``async with Admin(...) as admin`` or call :meth:`close`.

    A call waits for the connection (a server restarting) up to ``timeout`` seconds, the
    longest a call may take in all; then it fails with ``DEADLINE_EXCEEDED``. Waiting is safe:
    a call is not sent before the connection is up. ``None``: no limit.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        api_key: str,
        ca_cert: CaCert | None = None,
        channel_options: tuple[tuple[str, int | str], ...] = (),
        timeout: float | None = 10.0,
    ) -> None:
        parse_endpoint(server)
        if not api_key or any(not (0x20 <= ord(c) < 0x7F) for c in api_key):
            raise ValueError("the API key must be printable ASCII (it travels in a header)")
        self.server = server
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout = timeout
        self._ca_cert = ca_cert
        self._channel_options = channel_options
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.DurableIteratorAdminAsyncStub | None = None

    def _admin(self) -> pb_grpc.DurableIteratorAdminAsyncStub:
        if self._stub is None:
            # Opened lazily, in the running event loop (see Client.channel).
            self._channel = open_channel(
                self.server, ca_cert=self._ca_cert, options=self._channel_options
            )
            self._stub = pb_grpc.DurableIteratorAdminStub(self._channel)
        return self._stub

    async def publish(
        self,
        channel: str,
        payload: JsonValue,
        *,
        tags: Sequence[str] | None = None,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> str:
        """Publishes ``payload`` (any JSON value) to ``channel``; returns the event's id once
        the server has stored it. ``tags``, ``targets`` and ``exclude`` filter who receives it
        (see :class:`Publish`)."""
        request = Publish(channel, payload, tags=tags, targets=targets, exclude=exclude)
        try:
            response = await self._admin().Publish(
                request.to_proto(), metadata=self._metadata, timeout=self.timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None
        return response.id

    async def publish_batch(self, events: Iterable[Publish]) -> list[str]:
        """Publishes several events in one call; returns their ids, in order, once the server
        has stored them all. The events of one channel land in order and contiguously; one
        invalid event refuses the whole call and nothing is published."""
        request = pb.PublishBatchRequest(events=[event.to_proto() for event in events])
        try:
            response = await self._admin().PublishBatch(
                request, metadata=self._metadata, timeout=self.timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None
        return list(response.ids)

    async def issue_token(
        self,
        channel: str,
        *,
        tags: Sequence[str] = (),
        att: JsonValue = None,
        rpc: Sequence[str] = (),
        ttl: int = 0,
    ) -> IssuedToken:
        """Mints a token for ``channel`` with the server's signing key. ``att`` is readable by
        anyone holding the token (never put secrets in it); ``rpc`` lists the channel object's
        methods it may call (``path[0]``); ``ttl`` is its lifetime in seconds (0: the server's
        default, one day)."""
        request = pb.IssueTokenRequest(channel=channel, tags=list(tags), rpc=list(rpc), ttl_seconds=ttl)
        if att is not None:
            try:
                request.att.CopyFrom(_json.to_proto(att))
            except TypeError as error:
                raise EncodeError("IssueToken", str(error)) from None
        try:
            response = await self._admin().IssueToken(
                request, metadata=self._metadata, timeout=self.timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None
        return IssuedToken(token=response.token, expires_at=response.expires_at)

    async def close(self) -> None:
        """Closes the connection."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Admin({self.server!r})"
