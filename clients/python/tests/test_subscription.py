"""The subscription's state machine, on a fake transport and a manual clock: no sleeps, no
server. Each test follows one rule of the shared client design."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from durable_iterator import (
    Backoff,
    BackingOff,
    Closed,
    Connecting,
    Credentials,
    Disposition,
    EncodeError,
    Event,
    FetchingToken,
    Live,
    Method,
    Progress,
    ResumeFailure,
    ResumeReport,
    Resumed,
    RetriesExhaustedError,
    StatusError,
    TokenBackoff,
    TokenProviderError,
    on_status,
)
from durable_iterator.v1 import durable_iterator_pb2 as pb

from .conftest import MakeHarness
from .fakes import START_MS, FakeCall, Harness, Tokens, settle, token

C = grpc.StatusCode
EXPIRES_AT = 1_764_003_600  # the default Subscribed.token_expires_at: START + 1 h


async def open_live(h: Harness, **subscribed: object) -> FakeCall:
    """Asks for an item and answers the connect with ``Subscribed``: the stream is live."""
    if h.pending is None or h.pending.done():
        h.ask()
    await settle()
    call = h.transport.last
    call.subscribed(**subscribed)  # type: ignore[arg-type]
    await settle()
    assert h.state() == Live(), h.sub.progress
    return call


def ended(h: Harness) -> BaseException | None:
    """The exception the pending item ended with (it must have ended)."""
    assert h.pending is not None and h.pending.done(), h.sub.progress
    return h.pending.exception()


# ---- connecting -------------------------------------------------------------------------------


async def test_first_connect_sends_the_token_and_goes_live(make_harness: MakeHarness) -> None:
    seen: list[Progress] = []
    h = make_harness()
    h.sub._on_progress = seen.append
    h.ask()
    await settle()
    assert h.state() == Connecting(retry=0)
    request = h.transport.last.request
    assert request.token == token()
    assert not request.HasField("last_event_id") and not request.HasField("session_ticket")
    h.transport.last.subscribed(session_id="s-9", ticket="t-9")
    await settle()
    assert h.sub.progress == Progress(state=Live(), connections=1, refreshes=0, session_id="s-9")
    assert h.sub.session_id == "s-9"
    assert h.sub.credentials == Credentials(token=token(), session_ticket="t-9")
    assert [p.state for p in seen] == [FetchingToken(failures=0), Connecting(retry=0), Live()]
    h.transport.last.event("e-1", 7)
    assert await h.next() == Event(id="e-1", payload=7, published_at_ms=START_MS)


async def test_nothing_happens_before_the_first_item_is_asked_for(make_harness: MakeHarness) -> None:
    tokens = Tokens()
    h = make_harness(tokens)
    await settle()
    assert tokens.calls == 0 and not h.transport.calls


async def test_options_resume_the_first_subscribe(make_harness: MakeHarness) -> None:
    h = make_harness(last_event_id="e-4", session_ticket="old-ticket")
    assert h.sub.credentials.session_ticket == "old-ticket"
    h.ask()
    await settle()
    request = h.transport.last.request
    assert (request.last_event_id, request.session_ticket) == ("e-4", "old-ticket")


async def test_a_first_message_other_than_subscribed_is_internal_and_reconnects(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    h.ask()
    await settle()
    first = h.transport.last
    first.heartbeat()
    await settle()
    assert first.is_cancelled()
    assert len(h.transport.calls) == 2
    assert h.state() == Connecting(retry=1)
    assert h.sub._last_failure == StatusError(
        C.INTERNAL, "the stream did not start with a Subscribed message"
    )


async def test_handshake_timeout(make_harness: MakeHarness) -> None:
    h = make_harness(handshake_timeout=30)
    h.ask()
    await settle()
    first = h.transport.last
    await h.advance(29_999)
    assert len(h.transport.calls) == 1 and not first.is_cancelled()
    await h.advance(1)
    assert first.is_cancelled()
    assert len(h.transport.calls) == 2
    assert h.sub._last_failure is not None
    assert h.sub._last_failure.code is C.DEADLINE_EXCEEDED


# ---- backoff ----------------------------------------------------------------------------------


async def test_backoff_schedule_first_retry_at_once_then_full_jitter(
    make_harness: MakeHarness,
) -> None:
    h = make_harness(random=lambda: 0.5)
    call = await open_live(h)
    call.end(C.UNAVAILABLE, "restarting")
    await settle()
    # (retry, wait in ms with the draw 0.5): ceilings 0, 1 s, 2 s, 4 s, 8 s, then the 10 s cap.
    schedule = [(1, 0), (2, 500), (3, 1_000), (4, 2_000), (5, 4_000), (6, 5_000), (7, 5_000)]
    for retry, wait in schedule:
        calls = len(h.transport.calls)
        if wait:
            now = h.clock.now_ms()
            assert h.state() == BackingOff(retry=retry, until_ms=now + wait)
            await h.advance(wait - 1)
            assert len(h.transport.calls) == calls, f"retry {retry} went early"
            await h.advance(1)
            calls += 1
        assert h.state() == Connecting(retry=retry)
        assert len(h.transport.calls) == calls
        h.transport.last.end(C.UNAVAILABLE, "still down")
        await settle()


async def test_custom_backoff_and_zero_draw(make_harness: MakeHarness) -> None:
    h = make_harness(random=lambda: 0.0, backoff=Backoff(base=0.1, cap=0.2))
    call = await open_live(h)
    for _ in range(5):
        call.end(C.UNAVAILABLE)
        await settle()
        # A draw of 0 waits nothing at every retry: no BackingOff state at all.
        assert isinstance(h.state(), Connecting)
        call = h.transport.last
    assert len(h.transport.calls) == 6


async def test_an_event_or_heartbeat_proves_the_stream_and_resets_the_retries(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    call = await open_live(h)
    call.end(C.UNAVAILABLE)
    await settle()
    h.transport.last.end(C.UNAVAILABLE)
    await settle()
    assert isinstance(h.state(), BackingOff)
    await h.advance(500)
    # Accepted (Subscribed) but dropped before anything else: proves nothing.
    h.transport.last.subscribed()
    await settle()
    h.transport.last.end(C.UNAVAILABLE)
    await settle()
    assert h.state() == BackingOff(retry=3, until_ms=h.clock.now_ms() + 1_000)
    await h.advance(1_000)
    h.transport.last.subscribed()
    h.transport.last.heartbeat()
    await settle()
    h.transport.last.end(C.UNAVAILABLE)
    await settle()
    assert h.state() == Connecting(retry=1), "a heartbeat proved the stream"


async def test_token_expiring_proves_nothing(make_harness: MakeHarness) -> None:
    h = make_harness()
    call = await open_live(h)
    call.end(C.UNAVAILABLE)
    await settle()
    h.transport.last.subscribed()
    h.transport.last.token_expiring()
    await settle()
    h.transport.last.end(C.UNAVAILABLE)
    await settle()
    assert isinstance(h.state(), BackingOff)


async def test_retries_exhausted(make_harness: MakeHarness) -> None:
    h = make_harness(backoff=Backoff(max_attempts=2))
    h.ask()
    await settle()
    h.transport.last.end(C.UNAVAILABLE, "down 1")
    await settle()
    h.transport.last.end(C.UNAVAILABLE, "down 2")
    await settle()
    await h.advance(500)
    h.transport.last.end(C.UNAVAILABLE, "down 3")
    await settle()
    error = ended(h)
    assert isinstance(error, RetriesExhaustedError)
    assert error.attempts == 2
    assert error.last == StatusError(C.UNAVAILABLE, "down 3")
    assert error.code is C.UNAVAILABLE
    assert len(h.transport.calls) == 3
    assert h.state() == Closed()


# ---- resuming ---------------------------------------------------------------------------------


async def test_reconnect_resumes_after_the_last_event_with_the_ticket(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens()
    h = make_harness(tokens)
    call = await open_live(h, ticket="ticket-A", position="e-0")
    call.event("e-1")
    call.event("e-2")
    assert isinstance(await h.next(), Event)
    assert isinstance(await h.next(), Event)
    call.end(C.RESOURCE_EXHAUSTED, "slow consumer")
    h.ask()
    await settle()
    request = h.transport.last.request
    assert (request.last_event_id, request.session_ticket) == ("e-2", "ticket-A")
    assert request.token == token() and tokens.calls == 1
    assert call.is_cancelled()


@dataclass
class PositionCase:
    name: str
    option_last_id: str | None
    resume: pb.ResumeOutcome | None
    events: tuple[str, ...]
    resumes_from: str


POSITION_CASES = [
    PositionCase("no event yet: the position", None, None, (), "p-7"),
    PositionCase("an event: its id", None, None, ("e-8",), "e-8"),
    PositionCase(
        "recovered resume: the asked id",
        "e-3",
        pb.ResumeOutcome(requested=True, recovered=True, replayed=0),
        (),
        "e-3",
    ),
    PositionCase(
        "unrecovered, nothing replayed: the position",
        "e-3",
        pb.ResumeOutcome(requested=True, recovered=False, failure=pb.RESUME_FAILURE_UNKNOWN_ID),
        (),
        "p-7",
    ),
    PositionCase(
        "unrecovered, some replayed: the asked id (the replay brings the rest)",
        "e-3",
        pb.ResumeOutcome(
            requested=True, recovered=False, failure=pb.RESUME_FAILURE_TOO_OLD, replayed=2
        ),
        (),
        "e-3",
    ),
]


@pytest.mark.parametrize("case", POSITION_CASES, ids=[c.name for c in POSITION_CASES])
async def test_position_versus_last_id(make_harness: MakeHarness, case: PositionCase) -> None:
    h = make_harness(last_event_id=case.option_last_id)
    h.ask()
    await settle()
    h.transport.last.subscribed(position="p-7", resume=case.resume)
    await settle()
    if h.pending is not None and h.pending.done():
        assert isinstance(h.pending.result(), Resumed)
        h.ask()
    call = h.transport.last
    for event_id in case.events:
        call.event(event_id)
        assert isinstance(await h.next(), Event)
        h.ask()
    call.end(C.UNAVAILABLE)
    await settle()
    assert h.transport.last.request.last_event_id == case.resumes_from


async def test_unrecovered_resume_is_an_item(make_harness: MakeHarness) -> None:
    h = make_harness(last_event_id="e-5")
    h.ask()
    await settle()
    outcome = pb.ResumeOutcome(
        requested=True,
        recovered=False,
        failure=pb.RESUME_FAILURE_TOO_OLD,
        replayed=2,
        oldest_retained_id="e-9",
    )
    h.transport.last.subscribed(session_id="s-2", resume=outcome)
    report = ResumeReport(
        last_event_id="e-5",
        failure=ResumeFailure.TOO_OLD,
        replayed=2,
        oldest_retained_id="e-9",
        session_id="s-2",
    )
    assert await h.next() == Resumed(report)


async def test_recovered_resume_is_no_item(make_harness: MakeHarness) -> None:
    h = make_harness(last_event_id="e-5")
    h.ask()
    await settle()
    h.transport.last.subscribed(resume=pb.ResumeOutcome(requested=True, recovered=True, replayed=4))
    await settle()
    assert h.pending is not None and not h.pending.done()


# ---- status codes -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
async def test_every_status_code_has_its_disposition(
    make_harness: MakeHarness, code: grpc.StatusCode
) -> None:
    """The full dispositions table, through the state machine: what the next attempt does."""
    tokens = Tokens(token(iat=1_764_000_000), token(iat=1_764_000_001))
    h = make_harness(tokens)
    call = await open_live(h)
    call.event("e-1")
    assert isinstance(await h.next(), Event)
    h.ask()
    call.end(None if code is C.OK else code, "the server says so")
    await settle()
    disposition = on_status(code)
    if disposition is Disposition.FAIL:
        error = ended(h)
        assert isinstance(error, StatusError)
        assert (error.code, error.message) == (code, "the server says so")
        assert h.state() == Closed() and len(h.transport.calls) == 1
        with pytest.raises(StopAsyncIteration):
            await h.sub.__anext__()
        return
    assert len(h.transport.calls) == 2, "reconnected at once (retry 1)"
    assert h.state() == Connecting(retry=1)
    request = h.transport.last.request
    assert request.last_event_id == "e-1" and request.session_ticket == "ticket-1"
    if disposition is Disposition.RENEW_TOKEN:
        assert tokens.calls == 2 and request.token == token(iat=1_764_000_001)
    else:
        assert tokens.calls == 1 and request.token == token(iat=1_764_000_000)


def test_the_table_is_the_shared_design() -> None:
    reconnect = {C.OK, C.UNAVAILABLE, C.RESOURCE_EXHAUSTED, C.DEADLINE_EXCEEDED, C.INTERNAL,
                 C.UNKNOWN, C.CANCELLED}
    fail = {C.ABORTED, C.INVALID_ARGUMENT, C.PERMISSION_DENIED, C.FAILED_PRECONDITION,
            C.NOT_FOUND, C.ALREADY_EXISTS, C.OUT_OF_RANGE, C.UNIMPLEMENTED, C.DATA_LOSS}
    for code in grpc.StatusCode:
        expected = (
            Disposition.RECONNECT if code in reconnect
            else Disposition.FAIL if code in fail
            else Disposition.RENEW_TOKEN
        )
        assert on_status(code) is expected, code
    assert [c for c in grpc.StatusCode if on_status(c) is Disposition.RENEW_TOKEN] == [
        C.UNAUTHENTICATED
    ]


# ---- tokens -----------------------------------------------------------------------------------


async def test_a_fresh_token_refused_at_once_is_fatal(make_harness: MakeHarness) -> None:
    tokens = Tokens()
    h = make_harness(tokens)
    h.ask()
    await settle()
    h.transport.last.end(C.UNAUTHENTICATED, "bad signature")
    await settle()
    error = ended(h)
    assert isinstance(error, StatusError) and error.code is C.UNAUTHENTICATED
    assert tokens.calls == 1, "asking again would loop"


async def test_a_fresh_token_that_failed_otherwise_is_renewed_when_refused(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens(token(iat=1_764_000_000), token(iat=1_764_000_001))
    h = make_harness(tokens)
    h.ask()
    await settle()
    h.transport.last.end(C.UNAVAILABLE)  # the server was down: the token was never judged
    await settle()
    h.transport.last.end(C.UNAUTHENTICATED, "expired meanwhile")
    await settle()
    assert tokens.calls == 1 and isinstance(h.state(), BackingOff)
    await h.advance(500)  # retry 2 waits first, then asks the provider
    assert tokens.calls == 2
    assert h.transport.last.request.token == token(iat=1_764_000_001)
    # ... and that renewed token is fresh again: refused at once, it is fatal.
    h.transport.last.end(C.UNAUTHENTICATED, "still no")
    await settle()
    assert isinstance(ended(h), StatusError)
    assert tokens.calls == 2


async def test_an_accepted_token_refused_later_is_renewed(make_harness: MakeHarness) -> None:
    tokens = Tokens(token(iat=1_764_000_000), token(iat=1_764_000_001))
    h = make_harness(tokens)
    call = await open_live(h)
    call.end(C.UNAUTHENTICATED, "token expired")
    await settle()
    assert tokens.calls == 2
    assert h.state() == Connecting(retry=1)
    assert h.transport.last.request.token == token(iat=1_764_000_001)


async def test_token_provider_failures_wait_patiently_then_fail(make_harness: MakeHarness) -> None:
    down = ConnectionError("app server down")
    tokens = Tokens(down)
    h = make_harness(tokens, token_attempts=3)
    h.ask()
    await settle()
    # patient_delay(n) with the draw 0.5: ceiling(max(n, 2)) * 3/4.
    assert h.state() == TokenBackoff(failures=1, until_ms=START_MS + 750)
    await h.advance(749)
    assert tokens.calls == 1
    await h.advance(1)
    assert tokens.calls == 2
    assert h.state() == TokenBackoff(failures=2, until_ms=h.clock.now_ms() + 1_500)
    await h.advance(1_500)
    error = ended(h)
    assert isinstance(error, TokenProviderError)
    assert error.attempts == 3 and error.__cause__ is down and error.code is None
    assert not h.transport.calls


async def test_a_provider_recovering_resets_its_failure_count(make_harness: MakeHarness) -> None:
    tokens = Tokens(ValueError("once"), token())
    h = make_harness(tokens, token_attempts=2)
    h.ask()
    await settle()
    await h.advance(750)
    assert h.state() == Connecting(retry=0)
    assert tokens.calls == 2


async def test_async_provider_and_non_string_answers(make_harness: MakeHarness) -> None:
    answers: list[object] = [42, token()]

    async def provider() -> object:
        return answers.pop(0)

    h = make_harness(provider)
    h.ask()
    await settle()
    assert h.state() == TokenBackoff(failures=1, until_ms=START_MS + 750)
    await h.advance(750)
    assert h.transport.last.request.token == token()


# ---- liveness ---------------------------------------------------------------------------------


async def test_nothing_for_two_and_a_half_heartbeats_is_a_dead_stream(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    call = await open_live(h, heartbeat_ms=1_000)
    await h.advance(2_000)
    call.heartbeat()  # proves the stream and restarts the window
    await settle()
    await h.advance(2_499)
    assert not call.is_cancelled() and len(h.transport.calls) == 1
    await h.advance(1)
    assert call.is_cancelled()
    assert len(h.transport.calls) == 2 and h.state() == Connecting(retry=1)
    assert h.sub._last_failure is not None
    assert h.sub._last_failure.code is C.DEADLINE_EXCEEDED


async def test_custom_liveness_and_off(make_harness: MakeHarness) -> None:
    h = make_harness(liveness_intervals=4)
    call = await open_live(h, heartbeat_ms=1_000)
    await h.advance(3_999)
    assert not call.is_cancelled()
    await h.advance(1)
    assert call.is_cancelled()
    off = make_harness(liveness_intervals=None)
    call = await open_live(off, heartbeat_ms=1_000)
    assert off.clock.sleepers == 0, "no timer when liveness is off and refresh too"
    await off.advance(10_000_000)
    assert not call.is_cancelled()


async def test_messages_already_received_come_before_the_liveness_deadline(
    make_harness: MakeHarness,
) -> None:
    """A consumer that was busy must not take its own slowness for a dead stream."""
    h = make_harness()
    call = await open_live(h, heartbeat_ms=1_000)
    call.event("e-1")
    assert isinstance(await h.next(), Event)
    # The consumer is busy with e-1 (no item asked for) while the stream goes on.
    call.heartbeat()
    call.event("e-2")
    await settle()
    h.clock.advance(60_000)
    assert (await h.next()) == Event(id="e-2", payload=None, published_at_ms=START_MS)
    assert not call.is_cancelled() and len(h.transport.calls) == 1
    h.ask()
    await h.advance(2_499)
    assert not call.is_cancelled(), "the window starts when the consumer took the messages"
    await h.advance(1)
    assert call.is_cancelled()


# ---- refresh ----------------------------------------------------------------------------------


def refresh_answers(*answers: int | StatusError) -> Callable[[pb.RefreshTokenRequest], object]:
    queue = list(answers)

    async def handler(request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
        answer = queue.pop(0)
        if isinstance(answer, StatusError):
            raise answer
        return pb.RefreshTokenResponse(token_expires_at=answer)

    return handler


T1 = token(iat=1_764_000_000)
T2 = token(iat=1_764_003_000)
T3 = token(iat=1_764_003_001)


async def test_refresh_in_place_at_exp_minus_refresh_before_expiry(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens(T1, T2)
    h = make_harness(tokens, refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(EXPIRES_AT + 3_000)  # type: ignore[assignment]
    call = await open_live(h, ticket="ticket-R")
    await h.advance(3_000_000 - 1)
    assert tokens.calls == 1 and not h.transport.refresh_requests
    await h.advance(1)
    assert tokens.calls == 2
    [request] = h.transport.refresh_requests
    assert (request.session_ticket, request.token) == ("ticket-R", T2)
    assert h.sub.progress == Progress(state=Live(), connections=1, refreshes=1, session_id="s-1")
    assert h.sub.credentials.token == T2
    assert not call.is_cancelled()
    # The next deadline comes from the new expiry.
    assert h.sub._stream is not None
    assert h.sub._stream.refresh_at_ms == (EXPIRES_AT + 3_000 - 600) * 1_000


async def test_a_refreshed_token_expiring_no_later_counts_as_a_failure(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens(T1, T2, T3)
    h = make_harness(tokens, refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(EXPIRES_AT, EXPIRES_AT + 1)  # type: ignore[assignment]
    await open_live(h)
    await h.advance(3_000_000)
    assert len(h.transport.refresh_requests) == 1
    assert h.sub.progress.refreshes == 0
    # Not at once (that would spin): patient_delay(2) = 500 + 0.5 * 500.
    await h.advance(749)
    assert tokens.calls == 2
    await h.advance(1)
    assert tokens.calls == 3 and h.sub.progress.refreshes == 1
    assert h.sub.credentials.token == T3


@pytest.mark.parametrize(
    "failure", ["provider", "unavailable"], ids=["the provider fails", "RefreshToken fails"]
)
async def test_refresh_failures_retry_later_and_count(
    make_harness: MakeHarness, failure: str
) -> None:
    answers: list[str | Exception] = [T1]
    refreshes: list[int | StatusError] = []
    if failure == "provider":
        answers += [RuntimeError("down"), RuntimeError("down"), T2]
    else:
        answers += [T2, T2, T2]
        refreshes += [StatusError(C.UNAVAILABLE), StatusError(C.UNAVAILABLE)]
    refreshes.append(EXPIRES_AT + 3_000)
    tokens = Tokens(*answers)
    h = make_harness(tokens, refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(*refreshes)  # type: ignore[assignment]
    call = await open_live(h)
    await h.advance(3_000_000)
    assert tokens.calls == 2 and h.sub.progress.refreshes == 0
    await h.advance(750)  # patient_delay(2), draw 0.5
    assert tokens.calls == 3 and h.sub.progress.refreshes == 0
    await h.advance(1_499)  # patient_delay(3) = 1 000 + 500: the failures count
    assert tokens.calls == 3
    await h.advance(1)
    assert tokens.calls == 4 and h.sub.progress.refreshes == 1
    assert not call.is_cancelled() and h.sub.progress.connections == 1


async def test_failed_precondition_reconnects_at_once_with_the_new_token(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens(T1, T2)
    h = make_harness(tokens, refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(StatusError(C.FAILED_PRECONDITION, "not live"))  # type: ignore[assignment]
    call = await open_live(h, ticket="ticket-K")
    call.event("e-1")
    assert isinstance(await h.next(), Event)
    h.ask()
    await h.advance(3_000_000)
    assert call.is_cancelled()
    request = h.transport.last.request
    assert (request.token, request.session_ticket, request.last_event_id) == (
        T2, "ticket-K", "e-1",
    )
    assert h.state() == Connecting(retry=0)


async def test_a_token_for_other_tags_reconnects_without_refresh_token(
    make_harness: MakeHarness,
) -> None:
    tagged = token(iat=1_764_003_000, tags=("vip",))
    h = make_harness(Tokens(T1, tagged), refresh_before_expiry=600, liveness_intervals=None)
    call = await open_live(h, ticket="ticket-K")
    await h.advance(3_000_000)
    assert not h.transport.refresh_requests
    assert call.is_cancelled()
    request = h.transport.last.request
    assert (request.token, request.session_ticket) == (tagged, "ticket-K")


async def test_a_token_for_another_channel_starts_over_there(make_harness: MakeHarness) -> None:
    elsewhere = token("other-room", iat=1_764_003_000)
    h = make_harness(Tokens(T1, elsewhere), refresh_before_expiry=600, liveness_intervals=None)
    call = await open_live(h, ticket="ticket-K")
    call.event("e-1")
    assert isinstance(await h.next(), Event)
    h.ask()
    await h.advance(3_000_000)
    request = h.transport.last.request
    assert request.token == elsewhere
    assert not request.HasField("session_ticket") and not request.HasField("last_event_id")


async def test_a_refreshed_token_refused_at_once_is_fatal(make_harness: MakeHarness) -> None:
    tagged = token(iat=1_764_003_000, tags=("vip",))
    h = make_harness(Tokens(T1, tagged), refresh_before_expiry=600, liveness_intervals=None)
    await open_live(h)
    await h.advance(3_000_000)
    h.transport.last.end(C.UNAUTHENTICATED, "no")
    await settle()
    assert isinstance(ended(h), StatusError)


async def test_token_expiring_moves_the_refresh_to_now(make_harness: MakeHarness) -> None:
    tokens = Tokens(T1, T2)
    h = make_harness(tokens, refresh_before_expiry=60, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(EXPIRES_AT + 3_000)  # type: ignore[assignment]
    call = await open_live(h)
    call.token_expiring()
    await settle()
    assert tokens.calls == 2 and h.sub.progress.refreshes == 1


async def test_token_expiring_without_refresh_changes_nothing(make_harness: MakeHarness) -> None:
    tokens = Tokens()
    h = make_harness(tokens)
    call = await open_live(h)
    call.token_expiring()
    await settle()
    assert tokens.calls == 1 and h.state() == Live()
    assert not call.is_cancelled()


async def test_a_refresh_deadline_is_met_under_a_steady_flow(make_harness: MakeHarness) -> None:
    tokens = Tokens(T1, T2)
    h = make_harness(tokens, refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = refresh_answers(EXPIRES_AT + 3_000)  # type: ignore[assignment]
    call = await open_live(h)
    h.clock.advance(3_000_000)
    for n in range(3):
        call.event(f"e-{n}")
        assert isinstance(await h.next(), Event)
    await settle()
    assert h.sub.progress.refreshes == 1


# ---- closing ----------------------------------------------------------------------------------


class GatedTokens:
    """An async provider: the first answer comes at once, later ones wait for ``open``."""

    def __init__(self, *, first_at_once: bool) -> None:
        self.first_at_once = first_at_once
        self.calls = 0
        self.cancelled = 0
        self.open = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        if self.first_at_once and self.calls == 1:
            return T1
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return T2


async def _blocked_refresh(request: pb.RefreshTokenRequest) -> pb.RefreshTokenResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def reach(state: str, make_harness: MakeHarness) -> tuple[Harness, GatedTokens]:
    """A subscription waiting in ``state``."""
    gate = GatedTokens(first_at_once=state != "fetching token")
    if state == "token backoff":
        h = make_harness(Tokens(RuntimeError("down")))
    elif state == "refreshing":
        h = make_harness(gate, refresh_before_expiry=600, liveness_intervals=None)
    else:
        h = make_harness(gate)
    h.ask()
    await settle()
    if state == "connecting":
        assert h.state() == Connecting(retry=0)
    elif state == "fetching token":
        assert h.state() == FetchingToken(failures=0)
    elif state == "token backoff":
        assert isinstance(h.state(), TokenBackoff)
    elif state == "backing off":
        h.transport.last.end(C.UNAVAILABLE)
        await settle()
        h.transport.last.end(C.UNAVAILABLE)
        await settle()
        assert isinstance(h.state(), BackingOff)
    elif state in ("live", "refreshing"):
        h.transport.last.subscribed()
        await settle()
        assert h.state() == Live()
        if state == "refreshing":
            await h.advance(3_000_000)
            assert gate.calls == 2 and h.sub._stream is not None
            assert h.sub._stream.refresh is not None, "a refresh in flight"
    return h, gate


STATES = ["connecting", "backing off", "fetching token", "token backoff", "live", "refreshing"]


@pytest.mark.parametrize("how", ["aclose", "cancel the task"])
@pytest.mark.parametrize("state", STATES)
async def test_closing_in_every_state_leaves_nothing_behind(
    make_harness: MakeHarness, state: str, how: str
) -> None:
    h, gate = await reach(state, make_harness)
    assert h.pending is not None
    if how == "aclose":
        await h.sub.aclose()
        await settle()
        assert h.pending.done()
        assert isinstance(h.pending.exception(), StopAsyncIteration)
    else:
        h.pending.cancel()
        await settle()
        assert h.pending.cancelled()
    assert h.state() == Closed() and h.sub.closed
    assert all(call.is_cancelled() for call in h.transport.calls)
    assert h.clock.sleepers == 0, "a timer is left"
    assert not h.sub._tasks, "a task is left"
    if state in ("fetching token", "refreshing"):
        assert gate.cancelled == 1, "the provider call in flight was cancelled"
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not others
    with pytest.raises(StopAsyncIteration):
        await h.sub.__anext__()


async def test_refresh_token_in_flight_is_cancelled_by_close(make_harness: MakeHarness) -> None:
    h = make_harness(Tokens(T1, T2), refresh_before_expiry=600, liveness_intervals=None)
    h.transport.on_refresh = _blocked_refresh
    await open_live(h)
    await h.advance(3_000_000)
    assert len(h.transport.refresh_requests) == 1
    async with h.sub:
        pass
    await settle()
    assert not h.sub._tasks and h.clock.sleepers == 0


async def test_aclose_before_anything_and_twice(make_harness: MakeHarness) -> None:
    h = make_harness()
    await h.sub.aclose()
    await h.sub.aclose()
    assert h.state() == Closed()
    with pytest.raises(StopAsyncIteration):
        await h.sub.__anext__()
    assert not h.transport.calls


async def test_one_consumer_at_a_time(make_harness: MakeHarness) -> None:
    h = make_harness()
    h.ask()
    await settle()
    with pytest.raises(RuntimeError, match="already waiting"):
        await h.sub.__anext__()


async def test_a_fatal_error_is_raised_once_then_the_iteration_ends(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    items: list[object] = []

    async def consume() -> None:
        async for item in h.sub:
            items.append(item)

    consumer = asyncio.ensure_future(consume())
    await settle()
    call = h.transport.last
    call.subscribed()
    call.event("e-1")
    call.end(C.ABORTED, "resumed elsewhere")
    await settle()
    assert consumer.done()
    error = consumer.exception()
    assert isinstance(error, StatusError) and error.code is C.ABORTED
    assert [getattr(i, "id") for i in items] == ["e-1"]
    assert [i async for i in h.sub] == []


# ---- payloads ---------------------------------------------------------------------------------


async def test_typed_and_absent_payloads(make_harness: MakeHarness) -> None:
    h = make_harness()
    call = await open_live(h)
    typed = pb.Event(id="e-1", published_at_ms=5)
    typed.typed.type_url = "type.googleapis.com/demo.Thing"
    typed.typed.value = b"\x01\x02"
    call.send(pb.SubscribeResponse(event=typed))
    assert await h.next() == Event(
        id="e-1",
        payload={
            "@type": "type.googleapis.com/demo.Thing",
            "value": base64.b64encode(b"\x01\x02").decode(),
        },
        published_at_ms=5,
    )
    call.event("e-2")
    assert await h.next() == Event(id="e-2", payload=None, published_at_ms=START_MS)


# ---- invoke -----------------------------------------------------------------------------------


def invoke_answers(*answers: object) -> Callable[[pb.InvokeRequest], object]:
    from durable_iterator._json import to_proto

    queue = list(answers)

    async def handler(request: pb.InvokeRequest) -> pb.InvokeResponse:
        answer = queue.pop(0)
        if isinstance(answer, StatusError):
            raise answer
        return pb.InvokeResponse(output=to_proto(answer))

    return handler


async def test_invoke_sends_the_token_and_ticket_of_the_session(make_harness: MakeHarness) -> None:
    h = make_harness()
    h.transport.on_invoke = invoke_answers({"id": "e-1", "n": 3.0})  # type: ignore[assignment]
    await open_live(h, ticket="ticket-I")
    output = await h.sub.invoke(["publish"], {"payload": {"x": 1}, "exclude_self": True})
    assert output == {"id": "e-1", "n": 3}
    [request] = h.transport.invoke_requests
    assert (request.token, request.session_ticket, list(request.path)) == (
        token(), "ticket-I", ["publish"],
    )


async def test_invoke_before_live_asks_the_provider(make_harness: MakeHarness) -> None:
    tokens = Tokens()
    h = make_harness(tokens)
    h.transport.on_invoke = invoke_answers("pong")  # type: ignore[assignment]
    assert await h.sub.invoke("routerClient.ping") == "pong"
    [request] = h.transport.invoke_requests
    assert list(request.path) == ["routerClient", "ping"]
    assert request.token == token() and not request.HasField("session_ticket")
    assert tokens.calls == 1


async def test_invoke_refused_as_unauthenticated_goes_once_more_with_a_new_token(
    make_harness: MakeHarness,
) -> None:
    tokens = Tokens(T1, T2)
    h = make_harness(tokens)
    h.transport.on_invoke = invoke_answers(  # type: ignore[assignment]
        StatusError(C.UNAUTHENTICATED, "expired"), "ok"
    )
    await open_live(h)
    assert await h.sub.invoke(["m"]) == "ok"
    assert [r.token for r in h.transport.invoke_requests] == [T1, T2]
    h.transport.on_invoke = invoke_answers(  # type: ignore[assignment]
        StatusError(C.UNAUTHENTICATED, "a"), StatusError(C.UNAUTHENTICATED, "b")
    )
    with pytest.raises(StatusError, match="b"):
        await h.sub.invoke(["m"])


async def test_invoke_retries_only_unavailable_and_only_when_asked(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()
    await open_live(h)
    h.transport.on_invoke = invoke_answers(StatusError(C.UNAVAILABLE, "x"))  # type: ignore[assignment]
    with pytest.raises(StatusError):
        await h.sub.invoke(["m"])
    h.transport.on_invoke = invoke_answers(  # type: ignore[assignment]
        StatusError(C.UNAVAILABLE, "1"), StatusError(C.UNAVAILABLE, "2"), 5
    )
    call = asyncio.ensure_future(h.sub.invoke(["m"], retries=2))
    await settle()
    assert len(h.transport.invoke_requests) == 3, "retry 1 goes at once"
    await h.advance(499)
    assert not call.done()
    await h.advance(1)
    assert call.result() == 5
    h.transport.on_invoke = invoke_answers(StatusError(C.INTERNAL, "no"))  # type: ignore[assignment]
    with pytest.raises(StatusError) as raised:
        await h.sub.invoke(["m"], retries=5)
    assert raised.value.code is C.INTERNAL


async def test_invoke_input_must_be_json(make_harness: MakeHarness) -> None:
    h = make_harness()
    await open_live(h)
    with pytest.raises(EncodeError, match="publish"):
        await h.sub.invoke(["publish"], {"payload": {1, 2}})
    with pytest.raises(ValueError):
        await h.sub.invoke([])
    assert not h.transport.invoke_requests


@dataclass(frozen=True)
class Echo:
    text: str


ECHO: Method[Echo, str] = Method(("routerClient", "echo"), Echo, str)


async def test_typed_call(make_harness: MakeHarness) -> None:
    h = make_harness()
    await open_live(h)
    h.transport.on_invoke = invoke_answers("Echo: hi")  # type: ignore[assignment]
    assert await h.sub.call(ECHO, Echo(text="hi")) == "Echo: hi"
    sent = h.transport.invoke_requests[0].input.struct_value.fields["text"].string_value
    assert sent == "hi"
