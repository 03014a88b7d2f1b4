"""The command line's arguments and output lines, without a server."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import grpc
import pytest

from durable_iterator import Event, Progress, Live, RetriesExhaustedError, StatusError
from durable_iterator import TokenProviderError, unverified_claims
from durable_iterator._cli import _BadArguments, _parser, _Printer, _provider, main


@pytest.mark.parametrize(
    "argv",
    [
        ["subscribe", "--token", "t", "--channel", "c", "--signing-key", "k"],
        ["subscribe", "--token-url", "http://127.0.0.1:1/t", "--channel", "c", "--signing-key", "k"],
        ["subscribe", "--token", "t", "--tags", "a"],
        ["subscribe", "--token", "t", "--ttl", "60"],
        ["subscribe", "--channel", "c", "--signing-key", ""],
        ["subscribe", "--channel", "c", "--signing-key", "k", "--ttl", "0"],
        ["subscribe", "--token", "t", "--refresh-before-expiry", "-1"],
        ["subscribe"],
        ["subscribe", "--token", "t", "--server", "ftp://x"],
        ["subscribe", "--token", "t", "--unknown"],
        ["publish", "--api-key", "a", "--channel", "c", "--json", "{nope"],
        ["publish", "--api-key", "", "--channel", "c", "--json", "1"],
        ["nothing"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DURABLE_ITERATOR_TOKEN", "DURABLE_ITERATOR_SIGNING_KEY", "DURABLE_ITERATOR_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def parse(*argv: str) -> tuple[Callable[[], str], float | None]:
    get_token, refresh = _provider(_parser().parse_args(["subscribe", *argv]))

    def sync() -> str:
        token = get_token()
        assert isinstance(token, str), "these providers are sync"
        return token

    return sync, refresh


def test_channel_mints_and_refreshes_a_quarter_of_the_ttl_before_expiry() -> None:
    get_token, refresh = parse("--channel", "lobby", "--tags", "a,b", "--signing-key", "k1,k0")
    assert refresh == 300.0  # a quarter of 3 600 s, at most five minutes
    claims = unverified_claims(get_token())
    assert claims is not None and (claims.chn, claims.tags, claims.exp - claims.iat) == (
        "lobby", ("a", "b"), 3_600,
    )
    for ttl, expected in [("2", 1.0), ("40", 10.0), ("100000", 300.0)]:
        _, refresh = parse("--channel", "c", "--signing-key", "k", "--ttl", ttl)
        assert refresh == expected, ttl
    _, refresh = parse("--channel", "c", "--signing-key", "k", "--refresh-before-expiry", "5")
    assert refresh == 5.0


def test_a_fixed_token_refreshes_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_ITERATOR_TOKEN", "from-env")
    get_token, refresh = parse()
    assert get_token() == "from-env" and refresh is None
    get_token, refresh = parse("--token", "given", "--refresh-before-expiry", "30")
    assert get_token() == "given" and refresh == 30.0
    # An explicit provider wins over the environment's token.
    get_token, _ = parse("--channel", "c", "--signing-key", "k")
    assert get_token() != "from-env"
    with pytest.raises(_BadArguments):
        parse("--token", "t", "--token-url", "http://x")


def lines(stream: io.StringIO) -> list[object]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_output_lines_are_compact_json_in_the_contract_order() -> None:
    events, notices = io.StringIO(), io.StringIO()
    printer = _Printer(events, notices)
    printer.event(Event(id="e-1", payload={"b": 1, "a": "é"}, published_at_ms=5))
    assert events.getvalue() == '{"id":"e-1","payload":{"b":1,"a":"é"},"published_at_ms":5}\n'
    printer.on_progress(Progress(state=Live(), connections=1, session_id="s"))
    printer.on_progress(Progress(state=Live(), connections=1, session_id="s"))  # no new line
    printer.on_progress(Progress(state=Live(), connections=1, refreshes=1, session_id="s"))
    printer.error(StatusError(grpc.StatusCode.PERMISSION_DENIED, "no"))
    printer.error(TokenProviderError(5, OSError("down")))
    printer.error(RetriesExhaustedError(3, StatusError(grpc.StatusCode.UNAVAILABLE, "x")))
    assert lines(notices) == [
        {"connected": {"session_id": "s", "session_ticket": None, "connections": 1}},
        {"refreshed": {"refreshes": 1}},
        {"error": {"code": "PERMISSION_DENIED", "message": "no"}},
        {"error": {"code": None, "message": "the token provider failed 5 times in a row: OSError('down')"}},
        {"error": {"code": "UNAVAILABLE", "message": "gave up after 3 reconnect attempts; last: UNAVAILABLE: x"}},
    ]
    assert notices.getvalue().startswith('{"connected":{"session_id":"s","session_ticket":null,')
