"""A scripted transport for the state machine's tests: each ``Subscribe`` call is a
:class:`FakeCall` the test feeds messages and ends with a status, by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from durable_iterator import (
    ConnectionState,
    ManualClock,
    StatusError,
    Subscription,
    SubscriptionItem,
    TokenClaims,
    sign_token,
)
from durable_iterator.v1 import durable_iterator_pb2 as pb

KEY = "test-signing-key"
#: The manual clock's start: 2025-11-24, a whole second.
START_MS = 1_764_000_000_000


def token(channel: str = "room", *, tags: tuple[str, ...] | None = None, iat: int = 1_764_000_000,
          ttl: int = 3_600, rpc: tuple[str, ...] | None = None) -> str:
    return sign_token(KEY, TokenClaims(chn=channel, iat=iat, exp=iat + ttl, tags=tags, rpc=rpc))


async def settle(turns: int = 50) -> None:
    """Lets every task that can run, run (the fakes answer at once): no time passes."""
    for _ in range(turns):
        await asyncio.sleep(0)


_End = StatusError | None


class FakeCall:
    """One ``Subscribe`` stream."""

    def __init__(self, request: pb.SubscribeRequest) -> None:
        self.request = request
        self._inbox: asyncio.Queue[pb.SubscribeResponse | _End] = asyncio.Queue()
        self._cancelled = False
        self.reads = 0

    async def read(self) -> pb.SubscribeResponse | None:
        self.reads += 1
        item = await self._inbox.get()
        if isinstance(item, StatusError):
            raise item
        return item

    def cancel(self) -> None:
        self._cancelled = True

    def is_cancelled(self) -> bool:
        return self._cancelled

    # ---- what the test sends ------------------------------------------------------------

    def send(self, message: pb.SubscribeResponse) -> None:
        self._inbox.put_nowait(message)

    def subscribed(
        self,
        *,
        session_id: str = "s-1",
        ticket: str = "ticket-1",
        channel: str = "room",
        expires_at: int = 1_764_003_600,
        heartbeat_ms: int = 15_000,
        position: str = "e-0",
        resume: pb.ResumeOutcome | None = None,
    ) -> None:
        subscribed = pb.Subscribed(
            channel=channel,
            session_id=session_id,
            session_ticket=ticket,
            token_expires_at=expires_at,
            heartbeat_interval_ms=heartbeat_ms,
            retention_seconds=3_600,
            position=position,
        )
        subscribed.resume.CopyFrom(resume or pb.ResumeOutcome())
        self.send(pb.SubscribeResponse(subscribed=subscribed))

    def event(self, event_id: str, payload: float | str | None = None) -> None:
        event = pb.Event(id=event_id, published_at_ms=START_MS)
        if payload is not None:
            if isinstance(payload, str):
                event.json.string_value = payload
            else:
                event.json.number_value = payload
        self.send(pb.SubscribeResponse(event=event))

    def heartbeat(self) -> None:
        self.send(pb.SubscribeResponse(heartbeat=pb.Heartbeat(server_time_ms=START_MS)))

    def token_expiring(self, expires_at: int = 1_764_003_600) -> None:
        self.send(pb.SubscribeResponse(token_expiring=pb.TokenExpiring(token_expires_at=expires_at)))

    def end(self, code: grpc.StatusCode | None = None, message: str = "") -> None:
        """Ends the stream: with ``OK`` (``None``) or a status."""
        self._inbox.put_nowait(None if code is None else StatusError(code, message))


RefreshHandler = Callable[[pb.RefreshTokenRequest], Awaitable[pb.RefreshTokenResponse]]
InvokeHandler = Callable[[pb.InvokeRequest], Awaitable[pb.InvokeResponse]]


async def _no_refresh(request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
    raise StatusError(grpc.StatusCode.UNIMPLEMENTED, "no refresh handler")


async def _no_invoke(request: pb.InvokeRequest) -> pb.InvokeResponse:
    raise StatusError(grpc.StatusCode.UNIMPLEMENTED, "no invoke handler")


@dataclass
class FakeTransport:
    calls: list[FakeCall] = field(default_factory=list)
    refresh_requests: list[pb.RefreshTokenRequest] = field(default_factory=list)
    invoke_requests: list[pb.InvokeRequest] = field(default_factory=list)
    on_refresh: RefreshHandler = _no_refresh
    on_invoke: InvokeHandler = _no_invoke

    def subscribe(self, request: pb.SubscribeRequest) -> FakeCall:
        call = FakeCall(request)
        self.calls.append(call)
        return call

    async def refresh_token(self, request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
        self.refresh_requests.append(request)
        return await self.on_refresh(request)

    async def invoke(self, request: pb.InvokeRequest) -> pb.InvokeResponse:
        self.invoke_requests.append(request)
        return await self.on_invoke(request)

    @property
    def last(self) -> FakeCall:
        return self.calls[-1]


class Tokens:
    """A provider that hands out the queued tokens (the last one again when the queue is empty)
    and counts its calls; a queued exception is raised instead."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers) or [token()]
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Harness:
    """A subscription on a fake transport and a manual clock, with its consumer as a task."""

    def __init__(self, subscription: Subscription, transport: FakeTransport, clock: ManualClock) -> None:
        self.sub = subscription
        self.transport = transport
        self.clock = clock
        self.pending: asyncio.Future[SubscriptionItem] | None = None

    def ask(self) -> asyncio.Future[SubscriptionItem]:
        """Starts waiting for the next item (in a task, as a consumer would)."""
        assert self.pending is None or self.pending.done()
        pending = asyncio.ensure_future(self.sub.__anext__())
        self.pending = pending
        return pending

    def state(self) -> ConnectionState:
        return self.sub.progress.state

    async def next(self) -> object:
        """The next item, which must be ready once the loop has settled."""
        future = self.pending if self.pending is not None and not self.pending.done() else self.ask()
        await settle()
        assert future.done(), f"no item yet; {self.sub.progress}"
        self.pending = None
        return future.result()

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        await settle()
