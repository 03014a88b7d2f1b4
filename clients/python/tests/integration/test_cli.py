"""``python -m durable_iterator subscribe|publish`` against the real server, as the conformance
suite drives it: JSON lines on stdout and stderr, exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import durable_iterator as di

from .conftest import API_KEY, SIGNING_KEY, ServerFactory, within


class Command:
    """A running ``python -m durable_iterator`` whose output lines the test reads (bounded)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr_lines: list[str] = []

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Command:
        environment = {**os.environ, **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable_iterator", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment,
        )
        return cls(process)

    async def stdout_json(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = await within(self.process.stdout.readline())
        assert line, "stdout ended"
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    async def notice(self, key: str) -> dict[str, object]:
        """The next JSON line on stderr with ``key`` (log lines, which never start with ``{``,
        are skipped)."""
        assert self.process.stderr is not None
        while True:
            raw = await within(self.process.stderr.readline())
            assert raw, f"stderr ended before a {key!r} line: {self.stderr_lines}"
            line = raw.decode()
            self.stderr_lines.append(line)
            if not line.startswith("{"):
                continue
            value = json.loads(line)
            assert isinstance(value, dict) and len(value) == 1, line
            if key in value:
                inner = value[key]
                assert isinstance(inner, dict)
                return inner

    async def exit_status(self) -> int:
        return await within(self.process.wait())

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def commands() -> AsyncIterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.kill()
        await within(command.process.wait())


async def publish(server: str, payload: str, *extra: str) -> str:
    command = await Command.start(
        "publish", "--server", server, "--channel", "lobby", "--json", payload, *extra,
        env={"DURABLE_ITERATOR_API_KEY": API_KEY},
    )
    assert command.process.stdout is not None
    out = await within(command.process.stdout.read())
    assert await command.exit_status() == 0
    return out.decode().strip()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_subscribe_prints_events_and_exits_0_on_a_signal(
    start_server: ServerFactory, commands: list[Command], stop: int
) -> None:
    server = await start_server()
    sub = await Command.start(
        "subscribe", "--server", server.address, "--channel", "lobby",
        env={"DURABLE_ITERATOR_SIGNING_KEY": SIGNING_KEY},
    )
    commands.append(sub)
    connected = await sub.notice("connected")
    assert connected["connections"] == 1 and isinstance(connected["session_ticket"], str)
    ids = [await publish(server.address, json.dumps({"n": n, "x": 0.5})) for n in range(3)]
    for n, event_id in enumerate(ids):
        event = await sub.stdout_json()
        assert list(event) == ["id", "payload", "published_at_ms"]
        assert event["id"] == event_id and event["payload"] == {"n": n, "x": 0.5}
    sub.process.send_signal(stop)
    assert await sub.exit_status() == 0


async def test_subscribe_resumes_with_from_and_session_ticket(
    start_server: ServerFactory, commands: list[Command]
) -> None:
    server = await start_server()
    env = {"DURABLE_ITERATOR_SIGNING_KEY": SIGNING_KEY, "DURABLE_ITERATOR_SERVER": server.address}
    first = await Command.start("subscribe", "--channel", "lobby", env=env)
    commands.append(first)
    connected = await first.notice("connected")
    seen = await publish(server.address, '"one"')
    assert (await first.stdout_json())["id"] == seen
    first.process.send_signal(signal.SIGTERM)
    assert await first.exit_status() == 0
    missed = [await publish(server.address, f'"{word}"') for word in ("two", "three")]
    again = await Command.start(
        "subscribe", "--channel", "lobby", "--from", seen,
        "--session-ticket", str(connected["session_ticket"]), env=env,
    )
    commands.append(again)
    reconnected = await again.notice("connected")
    assert reconnected["session_id"] == connected["session_id"]
    assert [(await again.stdout_json())["id"] for _ in missed] == missed
    # A resume that cannot recover is reported on stderr.
    lost = await Command.start(
        "subscribe", "--channel", "lobby", "--from", "00000000-0000000000000001", env=env
    )
    commands.append(lost)
    resume = await lost.notice("resume")
    assert resume["failure"] == "store_reset" and resume["recovered"] is False
    assert set(resume) == {
        "recovered", "failure", "last_event_id", "replayed", "oldest_retained_id", "session_id"
    }


async def test_a_fatal_error_is_a_line_and_exit_1(
    start_server: ServerFactory, commands: list[Command]
) -> None:
    server = await start_server()
    forged = di.sign_token("not-the-key", di.TokenClaims(chn="lobby", iat=0, exp=4_000_000_000))
    sub = await Command.start("subscribe", "--server", server.address, "--token", forged)
    commands.append(sub)
    error = await sub.notice("error")
    assert error["code"] == "UNAUTHENTICATED" and isinstance(error["message"], str)
    assert await sub.exit_status() == 1


class _TokenServer(BaseHTTPRequestHandler):
    minter = di.SigningProvider(SIGNING_KEY, "lobby", ttl=4)
    served = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        type(self).served += 1
        body = (self.minter() + "\n").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def token_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TokenServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/token"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


async def test_token_url_provider_and_refresh_lines(
    start_server: ServerFactory, commands: list[Command], token_url: str
) -> None:
    server = await start_server()
    sub = await Command.start(
        "subscribe", "--server", server.address, "--token-url", token_url,
        "--refresh-before-expiry", "2",
    )
    commands.append(sub)
    assert (await sub.notice("connected"))["connections"] == 1
    assert await sub.notice("refreshed") == {"refreshes": 1}
    event_id = await publish(server.address, "1")
    assert (await sub.stdout_json())["id"] == event_id
    assert _TokenServer.served >= 2
    sub.process.send_signal(signal.SIGTERM)
    assert await sub.exit_status() == 0


async def test_publish_filters_and_its_failure(
    start_server: ServerFactory, commands: list[Command]
) -> None:
    server = await start_server()
    sub = await Command.start(
        "subscribe", "--server", server.address, "--channel", "lobby", "--tags", "vip",
        env={"DURABLE_ITERATOR_SIGNING_KEY": SIGNING_KEY},
    )
    commands.append(sub)
    connected = await sub.notice("connected")
    await publish(server.address, '"nobody"', "--tags", "")
    await publish(server.address, '"not you"', "--exclude", str(connected["session_id"]))
    shown = await publish(server.address, '"vips"', "--tags", "vip,other")
    assert (await sub.stdout_json()) ["id"] == shown
    wrong = await Command.start(
        "publish", "--server", server.address, "--api-key", "wrong", "--channel", "c", "--json", "1"
    )
    commands.append(wrong)
    assert (await wrong.notice("error"))["code"] == "UNAUTHENTICATED"
    assert await wrong.exit_status() == 1
