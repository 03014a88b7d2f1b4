"""The reconnecting subscription: a state machine driven by the consumer's ``async for``.

Nothing runs between two items unless the consumer asks for the next one, as in the Rust
client: the loop runs inside ``__anext__``. What has to go on concurrently with it (the read
of the open stream, a token refresh in flight, the timers) are tasks that the subscription
owns; closing it (``aclose``, leaving ``async with``, or cancelling the task waiting in
``__anext__``) cancels them all and the gRPC stream, and waits until they have stopped.

One loop: connect (wait the backoff, get a token if needed, ``Subscribe``, read
``Subscribed``), then read the stream while watching the liveness deadline and the refresh
deadline. Any end of the stream goes through :func:`on_status`: reconnect, renew the token, or
fail.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random as _random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, Union

import grpc

from ._backoff import Backoff
from ._clock import Clock, SystemClock
from ._errors import RetriesExhaustedError, StatusError, TokenProviderError
from ._invoke import Credentials, MethodPath
from ._invoke import invoke as _invoke
from ._items import Event, ResumeReport, Resumed, SubscriptionItem
from ._json import JsonValue
from ._method import Method
from ._policy import Disposition, on_status
from ._token import TokenProvider, refreshable_in_place, unverified_claims
from ._transport import SubscribeCall, Transport
from .v1 import durable_iterator_pb2 as pb

__all__ = [
    "BackingOff",
    "Closed",
    "Connecting",
    "ConnectionState",
    "FetchingToken",
    "Live",
    "Progress",
    "SubscribeOptions",
    "Subscription",
    "TokenBackoff",
]

_log = logging.getLogger("durable_iterator")

_T = TypeVar("_T")
_O = TypeVar("_O")
_I = TypeVar("_I")


@dataclass(frozen=True)
class SubscribeOptions:
    """How a subscription behaves (the shared design's options; durations in seconds)."""

    #: Resume after this event id at the first subscribe (later reconnects resume after the
    #: last event received).
    last_event_id: str | None = None
    #: Keep the session of this ticket (from an earlier subscription) at the first subscribe.
    session_ticket: str | None = None
    #: The reconnect schedule: first retry at once, then 1 s .. 10 s with full jitter,
    #: unlimited attempts.
    backoff: Backoff = field(default_factory=Backoff)
    #: Ask the provider for a new token this long before the current one expires and swap it
    #: on the live stream. ``None`` (the default): no refresh; an expired stream reconnects
    #: with a new token from the provider.
    refresh_before_expiry: float | None = None
    #: The stream counts as dead when nothing (event or heartbeat) arrived for this many
    #: heartbeat intervals; ``None`` turns the check off.
    liveness_intervals: float | None = 2.5
    #: Longest wait for ``Subscribed`` after the call is sent.
    handshake_timeout: float = 30.0
    #: Token provider failures in a row before the subscription fails with
    #: :class:`TokenProviderError` (between them it waits, never retrying at once).
    token_attempts: int = 5

    def __post_init__(self) -> None:
        if self.refresh_before_expiry is not None and self.refresh_before_expiry < 0:
            raise ValueError("refresh_before_expiry must not be negative")
        if self.liveness_intervals is not None and not self.liveness_intervals > 0:
            raise ValueError("liveness_intervals must be positive (or None: no check)")
        if not self.handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if self.token_attempts < 1:
            raise ValueError("token_attempts must be at least 1")


# ---- states and progress ------------------------------------------------------------------


@dataclass(frozen=True)
class Connecting:
    """Calling ``Subscribe`` (retry 0 is the first connect or a deliberate reconnect)."""

    retry: int


@dataclass(frozen=True)
class BackingOff:
    """Waiting before retry ``retry``, until ``until_ms`` on the client's clock."""

    retry: int
    until_ms: int


@dataclass(frozen=True)
class FetchingToken:
    """Waiting for the token provider (after ``failures`` failures in a row)."""

    failures: int


@dataclass(frozen=True)
class TokenBackoff:
    """Waiting before asking a failing token provider again, until ``until_ms``."""

    failures: int
    until_ms: int


@dataclass(frozen=True)
class Live:
    """The stream is open."""


@dataclass(frozen=True)
class Closed:
    """The subscription has ended (error, close, or cancel)."""


#: Where the subscription is: match it with ``case BackingOff(retry, until_ms): ...``.
ConnectionState = Union[Connecting, BackingOff, FetchingToken, TokenBackoff, Live, Closed]


@dataclass(frozen=True)
class Progress:
    """A snapshot of the subscription's progress."""

    state: ConnectionState
    #: Streams opened so far (``Subscribed`` received).
    connections: int = 0
    #: Tokens swapped on a live stream (``RefreshToken``).
    refreshes: int = 0
    #: The server-assigned session id, once known.
    session_id: str | None = None


# ---- internals ----------------------------------------------------------------------------


class _Stop(Exception):
    """The subscription was closed while its loop waited."""


class _Retry:
    """The attempt ended; the loop connects again."""


_RETRY = _Retry()


@dataclass(frozen=True)
class _InPlace:
    """The live stream now runs on ``token``, expiring at ``expires_at`` (Unix seconds)."""

    token: str
    expires_at: int


@dataclass(frozen=True)
class _Reconnect:
    """The new token names another channel or tag set (or the server said so): reconnect."""

    token: str


class _Failed:
    """The provider or the call failed; try again later."""


_FAILED = _Failed()

_Refreshed = Union[_InPlace, _Reconnect, _Failed]


@dataclass
class _Stream:
    """The open stream and its deadlines."""

    call: SubscribeCall
    #: The read in flight. There is always one while the stream is open, started as soon as
    #: the previous message was taken, so a message that arrives while the consumer is busy
    #: is there (and wins over any deadline) when the consumer comes back.
    read: asyncio.Task[pb.SubscribeResponse | None]
    expires_at_ms: int
    heartbeat_ms: int
    last_seen_ms: int
    #: When to start the next refresh; ``None``: refresh off.
    refresh_at_ms: int | None
    #: Whether anything but ``Subscribed`` arrived: only then has the stream proved itself and
    #: the backoff starts over (a server that accepts and drops at once gets no fast loop).
    proven: bool = False
    refresh: asyncio.Task[_Refreshed] | None = None
    refresh_failures: int = 0


async def _ask(get_token: TokenProvider) -> str:
    """One call of the provider, sync or async."""
    answer = get_token()
    token: object = await answer if inspect.isawaitable(answer) else answer
    if not isinstance(token, str):
        raise TypeError(f"the token provider returned a {type(token).__name__}, not a str")
    return token


class Subscription:
    """A subscription to a channel: an async iterator of :class:`Event` and :class:`Resumed`
    items that reconnects and resumes by itself.

    It reconnects on transport failures and retryable statuses, resuming after the last event
    id with the session ticket, so the session (and ``targets``/``exclude`` aimed at it)
    survives. An error that retrying cannot fix is raised by the ``async for`` once
    (:class:`StatusError`, :class:`TokenProviderError`, :class:`RetriesExhaustedError`); the
    subscription is closed then. Made by :meth:`Client.subscribe`::

        async with client.subscribe(get_token) as sub:
            async for item in sub:
                match item:
                    case Event(id, payload, published_at_ms): ...
                    case Resumed(report): ...   # history lost: reload from the source of truth

    Nothing happens until the first item is asked for. Close it with ``async with``,
    :meth:`aclose`, or by cancelling the task waiting for an item; each stops the gRPC stream,
    the timers and a refresh in flight. One task at a time may wait for items.
    """

    def __init__(
        self,
        transport: Transport,
        get_token: TokenProvider,
        options: SubscribeOptions | None = None,
        *,
        clock: Clock | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """Most code calls :meth:`Client.subscribe`; this takes a :class:`Transport`, so tests
        can drive the state machine with a fake one and a :class:`ManualClock`.

        ``random`` draws the backoff jitter (uniform in ``[0, 1)``)."""
        self._transport = transport
        self._get_token = get_token
        self._options = options or SubscribeOptions()
        self._clock: Clock = clock or SystemClock()
        self._on_progress = on_progress
        self._random = random
        self._progress = Progress(state=Connecting(retry=0))
        self._credentials = Credentials(token="", session_ticket=self._options.session_ticket)
        #: The token to subscribe with; ``None``: ask the provider first.
        self._token: str | None = None
        #: The token came from the provider and has not been tried yet: if its first try is
        #: refused as unauthenticated, asking again would loop, so that ends the subscription.
        #: A try that failed otherwise (a server that was down) clears it: by the next try the
        #: token may have expired, and then the provider must be asked again.
        self._token_fresh = False
        self._last_event_id = self._options.last_event_id
        self._ticket = self._options.session_ticket
        self._session_id = ""
        #: The channel of the last ``Subscribed``.
        self._channel: str | None = None
        #: Failed attempts since the stream last proved itself; retry ``failures`` is next.
        self._failures = 0
        self._last_failure: StatusError | None = None
        self._stream: _Stream | None = None
        self._done = False
        self._stop_requested = False
        self._stop: asyncio.Future[None] | None = None
        self._waiting = False
        self._finished: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- what the application sees --------------------------------------------------------

    @property
    def progress(self) -> Progress:
        """The subscription's progress now: state, connections, refreshes, session id."""
        return self._progress

    @property
    def session_id(self) -> str | None:
        """The server-assigned session id, once the first stream opened."""
        return self._progress.session_id

    @property
    def credentials(self) -> Credentials:
        """The token in use and the session ticket: what :meth:`invoke` sends."""
        return self._credentials

    @property
    def options(self) -> SubscribeOptions:
        return self._options

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (no more items)."""
        return self._done

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionItem:
        if self._waiting:
            raise RuntimeError("another task is already waiting for this subscription's next item")
        self._waiting = True
        try:
            item = await self._next_item()
        except BaseException:
            # A fatal error, a cancelled consumer, or a bug: in every case the subscription
            # ends here, and nothing of it may go on running.
            await self._shutdown()
            raise
        finally:
            self._waiting = False
            if self._finished is not None:
                self._finished.set()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Ends the subscription: closes the gRPC stream, cancels its timers and any refresh in
        flight, and returns once they have stopped. A task waiting for the next item gets
        ``StopAsyncIteration``. Idempotent."""
        self._stop_requested = True
        if self._waiting:
            # Another task is inside __anext__: wake it (every wait there races the stop), and
            # let it close everything before this returns.
            if self._stop is None:
                self._stop = asyncio.get_running_loop().create_future()
            if not self._stop.done():
                self._stop.set_result(None)
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()
        await self._shutdown()  # idempotent: the consumer may have done it all already

    async def invoke(
        self,
        path: MethodPath,
        input: object = None,
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
    ) -> JsonValue:
        """Calls a method of the channel object as this subscription's session (its token and
        ticket), over the same connection; returns the method's JSON output.

        A call refused as ``UNAUTHENTICATED`` (the token expired) is sent once more with a new
        token from the provider. ``retries`` resends calls refused as ``UNAVAILABLE`` (only
        those: a method may not be safe to run twice). Raises :class:`StatusError` with the
        method's own code (``PERMISSION_DENIED`` if ``path[0]`` is not in the token's ``rpc``,
        ``NOT_FOUND`` for an unknown path, ``INVALID_ARGUMENT`` for a bad input).
        """
        credentials = self._credentials
        if not credentials.token:
            credentials = replace(credentials, token=await self._fresh_token())
        backoff = backoff or Backoff()
        try:
            return await _invoke(
                self._transport, self._clock, credentials, path, input,
                retries=retries, backoff=backoff, random=self._random,
            )
        except StatusError as status:
            if status.code is not grpc.StatusCode.UNAUTHENTICATED:
                raise
        credentials = replace(credentials, token=await self._fresh_token())
        return await _invoke(
            self._transport, self._clock, credentials, path, input,
            retries=retries, backoff=backoff, random=self._random,
        )

    async def call(
        self,
        method: Method[_I, _O],
        input: _I,
        *,
        retries: int = 0,
        backoff: Backoff | None = None,
    ) -> _O:
        """Calls a typed method as this subscription's session; see :meth:`invoke`. Raises
        :class:`EncodeError` / :class:`DecodeError` when the input or output does not have the
        method's declared type."""
        encoded = method.encode_input(input)
        output = await self.invoke(method.path, encoded, retries=retries, backoff=backoff)
        return method.decode_output(output)

    def __repr__(self) -> str:
        return f"<Subscription {self._progress}>"

    # ---- the loop -------------------------------------------------------------------------

    async def _next_item(self) -> SubscriptionItem | None:
        try:
            while True:
                if self._done:
                    return None
                if self._stop_requested:
                    raise _Stop
                if self._stream is None:
                    outcome = await self._connect()
                    if isinstance(outcome, ResumeReport):
                        return Resumed(outcome)
                    continue
                item = await self._read()
                if item is not None:
                    return item
        except _Stop:
            await self._shutdown()
            return None

    async def _connect(self) -> ResumeReport | _Retry | None:
        """One connect attempt: the report of an unrecovered resume, ``None`` when live without
        one, ``_RETRY`` when the attempt failed and another one is due. Raises the fatal
        errors."""
        retry = self._failures
        backoff = self._options.backoff
        if backoff.exhausted(retry):
            last = self._last_failure or StatusError(grpc.StatusCode.UNAVAILABLE, "no reason given")
            raise RetriesExhaustedError(attempts=retry - 1, last=last)
        delay = backoff.delay_ms(retry, self._random())
        if delay > 0:
            until_ms = self._clock.now_ms() + delay
            self._set_state(BackingOff(retry=retry, until_ms=until_ms))
            await self._wait_until(until_ms)
        token = self._token if self._token is not None else await self._fetch_token()
        # A token for another channel starts a new subscription there: the ticket is bound to
        # the old channel, and the last id counts the old channel's events.
        claims = unverified_claims(token)
        if self._channel is not None and claims is not None and claims.chn != self._channel:
            self._ticket = None
            self._last_event_id = None
        self._set_state(Connecting(retry=retry))
        request = pb.SubscribeRequest(token=token)
        if self._last_event_id is not None:
            request.last_event_id = self._last_event_id
        if self._ticket is not None:
            request.session_ticket = self._ticket
        call = self._transport.subscribe(request)
        first = self._spawn(call.read())
        handshake_deadline = self._clock.now_ms() + round(self._options.handshake_timeout * 1000)
        timer = self._spawn(self._clock.sleep_until(handshake_deadline))
        try:
            await self._race(first, timer)
        except BaseException:
            call.cancel()  # the consumer was cancelled: the call must not outlive it
            raise
        finally:
            timer.cancel()
        if self._stop_requested or not first.done():
            first.cancel()
            call.cancel()
            if self._stop_requested:
                raise _Stop
            return self._on_end(
                StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, "no Subscribed message in time")
            )
        try:
            message = _result(first)
        except StatusError as status:
            call.cancel()
            return self._on_end(status)
        except BaseException:
            call.cancel()
            raise
        if message is None or message.WhichOneof("kind") != "subscribed":
            call.cancel()
            return self._on_end(
                StatusError(
                    grpc.StatusCode.INTERNAL, "the stream did not start with a Subscribed message"
                )
            )
        return self._went_live(call, message.subscribed)

    async def _fetch_token(self) -> str:
        """Asks the provider until it answers, waiting between failures (never at once)."""
        failures = 0
        while True:
            self._set_state(FetchingToken(failures=failures))
            asked = self._spawn(_ask(self._get_token))
            try:
                await self._race(asked)
            finally:
                asked.cancel()
            if self._stop_requested:
                raise _Stop
            try:
                if asked.cancelled():
                    raise RuntimeError("the token provider was cancelled")
                token = asked.result()
            except Exception as error:
                failures += 1
                _log.warning("the token provider failed (%d in a row): %r", failures, error)
                if failures >= self._options.token_attempts:
                    raise TokenProviderError(attempts=failures, source=error) from error
                # Never at once: a failing provider (the app server) must not be hammered.
                delay = self._options.backoff.patient_delay_ms(failures + 1, self._random())
                until_ms = self._clock.now_ms() + delay
                self._set_state(TokenBackoff(failures=failures, until_ms=until_ms))
                await self._wait_until(until_ms)
                continue
            self._token = token
            self._token_fresh = True
            return token

    def _went_live(self, call: SubscribeCall, subscribed: pb.Subscribed) -> ResumeReport | None:
        now = self._clock.now_ms()
        outcome = subscribed.resume if subscribed.HasField("resume") else None
        report = None
        if outcome is not None:
            report = ResumeReport.from_outcome(outcome, self._last_event_id, subscribed.session_id)
        self._token_fresh = False
        # With no event received yet, or an id the server could not resume from and nothing
        # replayed, the stream's position is where to resume: events published while the
        # connection is down are then not lost (the lost history was reported above).
        unusable = (
            outcome is not None
            and outcome.requested
            and not outcome.recovered
            and outcome.replayed == 0
        )
        if (self._last_event_id is None or unusable) and subscribed.position:
            self._last_event_id = subscribed.position
        self._ticket = subscribed.session_ticket
        self._session_id = subscribed.session_id
        self._channel = subscribed.channel
        self._credentials = Credentials(token=self._token or "", session_ticket=self._ticket)
        expires_at_ms = max(subscribed.token_expires_at, 0) * 1000
        self._stream = _Stream(
            call=call,
            read=self._spawn(call.read()),
            expires_at_ms=expires_at_ms,
            heartbeat_ms=subscribed.heartbeat_interval_ms,
            last_seen_ms=now,
            refresh_at_ms=self._refresh_deadline(expires_at_ms),
        )
        self._report(
            replace(
                self._progress,
                state=Live(),
                connections=self._progress.connections + 1,
                session_id=subscribed.session_id,
            )
        )
        return report

    def _refresh_deadline(self, expires_at_ms: int) -> int | None:
        before = self._options.refresh_before_expiry
        if before is None:
            return None
        return max(expires_at_ms - round(before * 1000), 0)

    def _on_end(self, status: StatusError) -> _Retry:
        """Decides what a status that ended (or refused) the stream means for the next attempt;
        raises it when it is fatal."""
        self._drop_stream()
        disposition = on_status(status.code)
        if disposition is Disposition.RECONNECT:
            self._token_fresh = False
        elif disposition is Disposition.RENEW_TOKEN:
            if self._token_fresh:
                # A token straight from the provider was refused: asking again would loop.
                raise status
            self._token = None
        else:
            raise status
        _log.debug("reconnecting after %s: %s", status.code.name, status.message)
        self._failures += 1
        self._last_failure = status
        return _RETRY

    async def _read(self) -> SubscriptionItem | None:
        """Reads the open stream until it yields an item (returned) or has to be reconnected
        (``None``, with the stream dropped); ``None`` also when only a deadline was handled."""
        stream = self._stream
        assert stream is not None
        factor = self._options.liveness_intervals
        liveness_at = None
        if factor is not None and stream.heartbeat_ms > 0:
            liveness_at = stream.last_seen_ms + int(stream.heartbeat_ms * factor)
        if not stream.read.done():
            waits: list[asyncio.Future[Any]] = [stream.read]
            if stream.refresh is not None:
                waits.append(stream.refresh)
            refresh_at = stream.refresh_at_ms if stream.refresh is None else None
            deadlines = [d for d in (liveness_at, refresh_at) if d is not None]
            timer = self._spawn(self._clock.sleep_until(min(deadlines))) if deadlines else None
            try:
                await self._race(*waits, *([timer] if timer else []))
            finally:
                if timer is not None:
                    timer.cancel()
        if self._stop_requested:
            raise _Stop
        now = self._clock.now_ms()
        # Messages already received come before any deadline: a consumer that was busy must not
        # take its own slowness for a dead stream.
        if stream.read.done():
            item = self._on_message(stream, now)
            self._tend_refresh(stream, now)
            return item
        self._tend_refresh(stream, now)
        if self._stream is not stream:
            return None  # the refresh asked for a reconnect
        if liveness_at is not None and now >= liveness_at:
            _log.debug("no event or heartbeat in time: reconnecting")
            self._on_end(
                StatusError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "no event or heartbeat within the liveness window",
                )
            )
        return None

    def _on_message(self, stream: _Stream, now: int) -> SubscriptionItem | None:
        try:
            message = _result(stream.read)
        except StatusError as status:
            self._on_end(status)
            return None
        if message is None:
            self._on_end(
                StatusError(grpc.StatusCode.UNAVAILABLE, "the stream ended without a status")
            )
            return None
        stream.last_seen_ms = now
        stream.read = self._spawn(stream.call.read())
        kind = message.WhichOneof("kind")
        # An event (progress) or a heartbeat (the stream lived a heartbeat interval) proves the
        # stream; a TokenExpiring sent at once on open proves nothing.
        if kind in ("event", "heartbeat") and not stream.proven:
            stream.proven = True
            self._failures = 0
            self._last_failure = None
        if kind == "event":
            self._last_event_id = message.event.id
            return Event.from_proto(message.event)
        if kind == "token_expiring":
            # The server's clock says the token is about to expire: refresh now if refreshing
            # is on (whatever our own deadline says).
            if stream.refresh_at_ms is not None and stream.refresh is None:
                stream.refresh_at_ms = now
        return None

    def _tend_refresh(self, stream: _Stream, now: int) -> None:
        """Takes the outcome of a finished refresh, and starts the next one when it is due.

        Done whatever woke the loop, a message included: under a steady flow of events the
        refresh deadline must still be met (the refresh runs beside the reading)."""
        if self._stream is not stream:
            return
        if stream.refresh is not None and stream.refresh.done():
            refreshed = stream.refresh.result()
            stream.refresh = None
            self._on_refreshed(refreshed, now)
            if self._stream is not stream:
                return
        due = stream.refresh_at_ms is not None and now >= stream.refresh_at_ms
        if stream.refresh is None and due:
            stream.refresh = self._spawn(self._refresh(self._token or "", self._ticket or ""))

    async def _refresh(self, current: str, ticket: str) -> _Refreshed:
        """A refresh in flight: the provider, then ``RefreshToken`` when the token allows it."""
        try:
            token = await _ask(self._get_token)
        except Exception as error:
            _log.warning("the token provider failed (refresh): %r", error)
            return _FAILED
        if not refreshable_in_place(current, token):
            return _Reconnect(token)
        try:
            response = await self._transport.refresh_token(
                pb.RefreshTokenRequest(session_ticket=ticket, token=token)
            )
        except StatusError as status:
            # The server judges the subscription changed, or the session is not live on it (the
            # stream is being replaced): a reconnect with the new token settles both.
            if status.code is grpc.StatusCode.FAILED_PRECONDITION:
                return _Reconnect(token)
            _log.warning("RefreshToken failed: %s: %s", status.code.name, status.message)
            return _FAILED
        return _InPlace(token=token, expires_at=max(response.token_expires_at, 0))

    def _on_refreshed(self, refreshed: _Refreshed, now: int) -> None:
        stream = self._stream
        if isinstance(refreshed, _Reconnect):
            # A deliberate reconnect, at once: the session ticket keeps the session.
            self._token = refreshed.token
            self._token_fresh = True
            self._drop_stream()
            self._failures = 0
            return
        if stream is None:
            return
        if isinstance(refreshed, _InPlace):
            expires_at_ms = refreshed.expires_at * 1000
            if expires_at_ms <= stream.expires_at_ms:
                # The provider handed out a token that expires no later: refreshing again at
                # once would spin, so this counts as a failure.
                self._refresh_failed(stream, now)
                return
            stream.expires_at_ms = expires_at_ms
            stream.refresh_at_ms = self._refresh_deadline(expires_at_ms)
            stream.refresh_failures = 0
            self._token = refreshed.token
            self._credentials = replace(self._credentials, token=refreshed.token)
            self._report(replace(self._progress, refreshes=self._progress.refreshes + 1))
            return
        self._refresh_failed(stream, now)

    def _refresh_failed(self, stream: _Stream, now: int) -> None:
        """Schedules the next refresh attempt after a failure, never at once."""
        stream.refresh_failures += 1
        delay = self._options.backoff.patient_delay_ms(stream.refresh_failures + 1, self._random())
        stream.refresh_at_ms = now + max(delay, 1)

    async def _fresh_token(self) -> str:
        try:
            return await _ask(self._get_token)
        except Exception as error:
            raise TokenProviderError(attempts=1, source=error) from error

    # ---- tasks, waits, shutdown -----------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, _T] | Awaitable[_T]) -> asyncio.Task[_T]:
        """A task the subscription owns: cancelled and awaited when it closes."""
        task: asyncio.Task[_T] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # A read that failed after its stream was dropped has nobody to look at its error:
        # retrieve it so that asyncio does not log "exception was never retrieved".
        if not task.cancelled():
            task.exception()

    async def _race(self, *waits: asyncio.Future[Any]) -> None:
        """Returns when one of ``waits`` is done, or the subscription is closed."""
        if self._stop is None:
            self._stop = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._stop, *waits], return_when=asyncio.FIRST_COMPLETED)

    async def _wait_until(self, until_ms: int) -> None:
        """Waits until ``until_ms`` on the clock; raises ``_Stop`` if closed first."""
        timer = self._spawn(self._clock.sleep_until(until_ms))
        try:
            await self._race(timer)
        finally:
            timer.cancel()
        if self._stop_requested:
            raise _Stop

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stream.call.cancel()
        stream.read.cancel()
        if stream.refresh is not None:
            stream.refresh.cancel()

    async def _shutdown(self) -> None:
        """Closes everything and waits until every task of the subscription has stopped."""
        self._done = True
        self._drop_stream()
        self._set_state(Closed())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _set_state(self, state: ConnectionState) -> None:
        if self._progress.state != state:
            self._report(replace(self._progress, state=state))

    def _report(self, progress: Progress) -> None:
        self._progress = progress
        if self._on_progress is not None:
            try:
                self._on_progress(progress)
            except Exception:
                _log.exception("the on_progress callback failed")


def _result(task: asyncio.Task[_T]) -> _T:
    """The task's result; a read cancelled by someone else (a closing channel) is a
    ``CANCELLED`` status."""
    if task.cancelled():
        raise StatusError(grpc.StatusCode.CANCELLED, "the stream was cancelled")
    return task.result()

