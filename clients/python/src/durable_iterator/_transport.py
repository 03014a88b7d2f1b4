"""The calls a subscription makes, behind a small interface: gRPC in production
(:class:`GrpcTransport`), a scripted fake in the state machine's tests.

Every failure comes out as :class:`~durable_iterator.StatusError`, whatever the transport."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
import grpc.aio

from ._errors import StatusError
from .v1 import durable_iterator_pb2 as pb
from .v1 import durable_iterator_pb2_grpc as pb_grpc

__all__ = ["GrpcTransport", "SubscribeCall", "Transport", "status_error"]

Metadata = Sequence[tuple[str, str]]


class SubscribeCall(Protocol):
    """An open ``Subscribe`` server stream."""

    async def read(self) -> pb.SubscribeResponse | None:
        """The next message; ``None`` when the stream ended with ``OK``. Raises
        :class:`StatusError` when it ended with another status."""
        ...

    def cancel(self) -> None:
        """Closes the stream (idempotent)."""
        ...


class Transport(Protocol):
    """The ``DurableIterator`` service, as the subscription and ``invoke`` call it."""

    def subscribe(self, request: pb.SubscribeRequest) -> SubscribeCall:
        """Sends ``Subscribe``; its failures surface on the first :meth:`SubscribeCall.read`."""
        ...

    async def refresh_token(self, request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
        ...

    async def invoke(self, request: pb.InvokeRequest) -> pb.InvokeResponse:
        ...


def status_error(error: grpc.aio.AioRpcError) -> StatusError:
    """The :class:`StatusError` of a failed gRPC call."""
    return StatusError(error.code(), error.details() or "")


class _GrpcSubscribeCall:
    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]) -> None:
        self._call = call

    async def read(self) -> pb.SubscribeResponse | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None
        if message is grpc.aio.EOF:
            return None
        assert isinstance(message, pb.SubscribeResponse)
        return message

    def cancel(self) -> None:
        self._call.cancel()


class GrpcTransport:
    """:class:`Transport` over a ``grpc.aio`` channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.DurableIteratorStub(channel)

    def subscribe(self, request: pb.SubscribeRequest) -> SubscribeCall:
        return _GrpcSubscribeCall(self._stub.Subscribe(request))

    async def refresh_token(self, request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
        try:
            return await self._stub.RefreshToken(request)
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None

    async def invoke(self, request: pb.InvokeRequest) -> pb.InvokeResponse:
        try:
            return await self._stub.Invoke(request)
        except grpc.aio.AioRpcError as error:
            raise status_error(error) from None
