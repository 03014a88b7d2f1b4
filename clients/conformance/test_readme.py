"""Every grpcurl command of the top-level README.md, run as the README shows it, through the
grpcurl stand-in (``harness/grpcurl.py``), against the real server.

- ``harness/readme.py`` finds the commands, the ``export`` lines in force for each and the
  answer the README prints after it.
- Each runs with bash in a ``Terminal`` laid out like the repository, after two substitutions:
  the README's address (``127.0.0.1:50051``, ``localhost:50051``) becomes the server's, and the
  README's example values (``PLACEHOLDERS``) become the latest value of the same key that an
  earlier command printed (the ticket and session id of a ``subscribed``, an event id).
- The server is the section's (``SECTION_SERVERS``): the walk-through's ``serve`` with the dev
  keys, unless the section runs another one.
- ``STEPS`` holds what some commands need around them, as the README tells it: a subscriber
  that stays open and prints what is published, a stop (Ctrl-C) and more publishes before a
  resume, live sessions for presence and disconnects. Any other command is one unary call.
- Each command must succeed and answer what the README prints: the same keys at each level,
  the same kinds of values (a 64-bit integer is a string); ids and timestamps may differ. A
  command the stand-in cannot run fails the test, so a grpcurl line added to the README is
  checked too. The commands that ran are printed at the end of each test."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.clients import REPO, server_binary
from harness.grpcurl import (
    STATUS_OFFSET,
    USAGE_STATUS,
    UsageError,
    parse_args,
    run,
    target_of,
)
from harness.readme import Command, commands, shape_differences
from harness.reflection import Reflection
from harness.server import ChatServer, Server
from harness.terminal import Finished, Running, Terminal

README = REPO / "README.md"
#: The keys of the README's walk-through.
DEV_SIGNING_KEY = "dev-signing-key"
DEV_API_KEY = "dev-api-key"
#: The retention the README's answers show (serve's default).
RETENTION_SECONDS = 300
#: The bound of every wait: far beyond what any step needs on a loaded 2-core machine.
WAIT = 30.0

#: Values in the README's commands that a reader replaces by their own, and the key of an
#: earlier answer whose latest value replaces each.
PLACEHOLDERS = {
    "n4XAvkFXltLUTMAdVDDkTg.WguhZvfZyb9Rp1l6HnWy0iw2VwIFEldUmGXTHv8Pv-8": "sessionTicket",
    "n4XAvkFXltLUTMAdVDDkTg": "sessionId",
    "8b5ed5b0-0000000000000001": "id",
}
_PLACEHOLDER = re.compile(
    "|".join(re.escape(p) for p in sorted(PLACEHOLDERS, key=len, reverse=True))
)

#: The server of each README section whose commands do not run against the walk-through's.
SECTION_SERVERS = {"TLS and HTTP/2": "dev-tls", "Channel objects": "chat"}

#: What `grpcurl list` shows (over reflection v1, which lists itself): both services of the
#: contract, health and reflection.
SERVICES = (
    "durable_iterator.v1.DurableIterator",
    "durable_iterator.v1.DurableIteratorAdmin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
)

#: The "few more events" of the walk-through's step 4, each the step-3 request with these
#: fields added: the first for the tag `admins` only (the README's History shows such an
#: event second), which the walk-through's untagged session does not get on its resume.
MORE_EVENTS: tuple[dict[str, Any], ...] = ({"tags": {"values": ["admins"]}}, {}, {})

pytestmark = pytest.mark.timeout(170)


def chat_binary() -> Path:
    """The chat example: DURABLE_ITERATOR_CHAT_BIN, else beside the server binary."""
    if "DURABLE_ITERATOR_CHAT_BIN" in os.environ:
        return Path(os.environ["DURABLE_ITERATOR_CHAT_BIN"])
    return server_binary().parent / "examples" / "chat"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def request_of(command: Command) -> dict[str, Any]:
    """The request a command sends with ``-d '<json>'`` ({} for ``-d @`` or none)."""
    data = parse_args(command.argv).data
    if not data or data == "@":
        return {}
    value = json.loads(data)
    assert isinstance(value, dict), f"README.md:{command.line}: -d is not a JSON object"
    return value


def method_of(command: Command) -> str:
    """``Publish``, ``Subscribe``... or ``list``; "" for a command line grpcurl does not take
    (run as it is, the stand-in says why, and the command fails)."""
    try:
        target = target_of(parse_args(command.argv))
    except UsageError:
        return ""
    return target.verb if target.verb != "invoke" else re.split(r"[/.]", target.symbol)[-1]


def check_shape(command: Command, answer: Any) -> None:
    """The answer has the shape the README prints after the command (if it prints one)."""
    if command.answer is None:
        return
    differences = shape_differences(command.answer, answer)
    assert not differences, (
        f"README.md:{command.line} ({command.text}): the answer is not shaped like the one "
        f"printed at README.md:{command.answer_line}:\n  "
        + "\n  ".join(differences)
        + f"\nanswer: {json.dumps(answer, indent=2)}"
    )


@dataclass
class Session:
    """A Subscribe of the test's own, live."""

    running: Running
    subscribed: dict[str, Any]


class Reader:
    """A reader walking through the README: one terminal, the servers the sections run, what
    earlier commands printed, and the streams still open."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.terminal = Terminal(workdir / "repo", server_binary())
        self.servers: dict[str, Server] = {}
        self.carried: dict[str, str] = {}
        #: The walk-through's subscriber (a README command) and its `subscribed`.
        self.subscriber: Running | None = None
        self.subscribed: dict[str, Any] = {}
        #: The request of the walk-through's publish (step 3), for "publish a few more".
        self.published: dict[str, Any] | None = None
        #: Sessions the test opened, by session id.
        self.sessions: dict[str, Session] = {}
        self.ran: list[str] = []

    # ---- servers ----------------------------------------------------------------------------

    def server(self, name: str) -> Server:
        """The server ``name`` (``serve``, ``dev-tls`` or ``chat``), started on first use."""
        if name in self.servers:
            return self.servers[name]
        workdir = self.workdir / name
        workdir.mkdir()
        server: Server
        if name == "chat":
            binary = chat_binary()
            if not os.access(binary, os.X_OK):
                _unavailable(
                    f"the chat example {binary} is missing (cargo build --example chat, or "
                    "set DURABLE_ITERATOR_CHAT_BIN)"
                )
            server = ChatServer(binary, workdir, signing_key=DEV_SIGNING_KEY, api_key=DEV_API_KEY)
        elif name == "dev-tls":
            # In the terminal's directory: the README names its certificate by that path.
            data_dir = self.terminal.root / "durable-iterator-data"
            server = Server(
                server_binary(),
                workdir,
                signing_key=DEV_SIGNING_KEY,
                api_key=DEV_API_KEY,
                retention_seconds=RETENTION_SECONDS,
                data_dir=data_dir,
                extra_args=("--dev-tls",),
            )
        else:
            server = Server(
                server_binary(),
                workdir,
                signing_key=DEV_SIGNING_KEY,
                api_key=DEV_API_KEY,
                retention_seconds=RETENTION_SECONDS,
            )
        self.servers[name] = server
        server.start()
        return server

    def server_of(self, command: Command) -> Server:
        return self.server(SECTION_SERVERS.get(command.section, "serve"))

    # ---- running README commands ------------------------------------------------------------

    def script(self, command: Command) -> str:
        """The command as a reader types it here: this server's port, their own values."""
        port = self.server_of(command).port
        script = command.script.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
        script = script.replace("localhost:50051", f"localhost:{port}")

        def own(match: re.Match[str]) -> str:
            key = PLACEHOLDERS[match.group(0)]
            assert key in self.carried, (
                f"README.md:{command.line}: {match.group(0)} stands for a {key} an earlier "
                f"command prints, and none printed one"
            )
            return self.carried[key]

        return _PLACEHOLDER.sub(own, script)

    def carry(self, message: Any) -> None:
        """Remembers the values that the README's placeholders stand for (the latest wins)."""
        if isinstance(message, dict):
            for key, value in message.items():
                if key in PLACEHOLDERS.values() and isinstance(value, str):
                    self.carried[key] = value
                self.carry(value)
        elif isinstance(message, list):
            for value in message:
                self.carry(value)

    def run(self, command: Command) -> Finished:
        finished = self.terminal.run(self.script(command), command.exports, timeout=WAIT * 2)
        assert finished.status == 0, f"README.md:{command.line} failed:\n{finished.describe()}"
        for message in finished.messages():
            self.carry(message)
        return finished

    def unary(self, command: Command) -> Any:
        """Runs a unary command; its one answer, checked against the README's."""
        messages = self.run(command).messages()
        assert len(messages) == 1, f"README.md:{command.line}: not one answer: {messages}"
        check_shape(command, messages[0])
        return messages[0]

    def next_event(self, running: Running) -> Any:
        """The next event a README command's stream prints (heartbeats skipped)."""
        while True:
            message = self.read(running)
            if "event" in message:
                return message["event"]
            assert "heartbeat" in message, f"neither an event nor a heartbeat: {message}"

    def start(self, command: Command) -> Running:
        return self.terminal.start(self.script(command), command.exports)

    def read(self, running: Running) -> Any:
        """The next message of a README command's stream."""
        message = running.next_message(WAIT)
        self.carry(message)
        return message

    # ---- the test's own calls ---------------------------------------------------------------

    def admin(self, method: str, request: dict[str, Any]) -> Any:
        """An admin call of the test's own on the walk-through's server (not carried)."""
        finished = self.terminal.grpcurl(
            "-plaintext",
            "-H",
            f"authorization: Bearer {DEV_API_KEY}",
            "-d",
            json.dumps(request),
            f"127.0.0.1:{self.server('serve').port}",
            f"durable_iterator.v1.DurableIteratorAdmin/{method}",
        )
        assert finished.status == 0, finished.describe()
        return finished.messages()[0]

    def open_session(
        self, channel: str, *, tags: list[str], att: Any, resumes: int, exports: tuple[str, ...]
    ) -> Session:
        """A Subscribe of the test's own (the README's token command, piped into grpcurl) that
        stops and resumes with its ticket ``resumes`` times, then stays open."""
        token = ["./target/release/durable-iterator", "token", "--channel", channel, "--request"]
        if tags:
            token += ["--tags", ",".join(tags)]
        if att is not None:
            token += ["--att", json.dumps(att)]
        subscribe = shlex.join(
            [
                "grpcurl",
                "-plaintext",
                "-d",
                "@",
                f"127.0.0.1:{self.server('serve').port}",
                "durable_iterator.v1.DurableIterator/Subscribe",
            ]
        )
        running = self.terminal.start(f"{shlex.join(token)} | {subscribe}", exports)
        subscribed = running.next_message(WAIT)["subscribed"]
        for _ in range(resumes):
            running.interrupt(WAIT)
            again = [*token, "--session-ticket", subscribed["sessionTicket"]]
            running = self.terminal.start(f"{shlex.join(again)} | {subscribe}", exports)
            subscribed = running.next_message(WAIT)["subscribed"]
        session = Session(running, subscribed)
        self.sessions[subscribed["sessionId"]] = session
        return session

    def wait_for_sessions(self, channel: str, count: int) -> None:
        """Until PresenceStats counts ``count`` sessions on ``channel`` (a stream stopped with
        Ctrl-C leaves when the server has seen its connection close)."""
        deadline = time.monotonic() + WAIT
        while True:
            stats = self.admin("PresenceStats", {"channel": channel})
            if int(stats.get("sessions", "0")) == count:
                return
            assert time.monotonic() < deadline, (
                f"{channel} has not {count} live sessions within {WAIT} s: {stats}"
            )
            time.sleep(0.2)

    def stop_subscriber(self) -> None:
        """Ctrl-C to the walk-through's subscriber."""
        assert self.subscriber is not None, "the walk-through's subscriber is not running"
        self.subscriber.interrupt(WAIT)
        self.subscriber = None

    def close(self) -> None:
        self.terminal.close()
        for server in self.servers.values():
            server.kill()

    def log(self) -> str:
        return "\n".join(
            f"server {name} log (tail):\n{server.log_text()[-3000:]}"
            for name, server in self.servers.items()
        )


# ---- what some commands need around them ----------------------------------------------------


def subscribe(reader: Reader, command: Command) -> str:
    """Step 2 (a new subscription) or step 4 (a resume) of the walk-through."""
    if "--last-event-id" in command.text:
        return resume(reader, command)
    running = reader.start(command)
    first = reader.read(running)
    check_shape(command, first)
    assert "subscribed" in first, f"the first message is not `subscribed`: {first}"
    reader.subscriber, reader.subscribed = running, first["subscribed"]
    return "streaming; `subscribed` as printed"


def resume(reader: Reader, command: Command) -> str:
    """Stop the subscriber, publish a few more events as in step 3, subscribe again with the
    last id seen and the ticket: the same session, the missed events (those its filter lets
    through) replayed in order."""
    assert reader.published is not None, "a resume needs the walk-through's publish before it"
    session_id = reader.subscribed.get("sessionId")
    reader.stop_subscriber()
    missed = []
    for extra in MORE_EVENTS:
        answer = reader.admin("Publish", {**reader.published, **extra})
        if "tags" not in extra:
            missed.append(answer["id"])
    running = reader.start(command)
    first = reader.read(running)
    check_shape(command, first)
    subscribed = first.get("subscribed", {})
    assert subscribed.get("sessionId") == session_id, f"not the same session: {first}"
    resumed = subscribed.get("resume", {})
    assert (resumed.get("requested"), resumed.get("recovered"), resumed.get("replayed")) == (
        True,
        True,
        str(len(missed)),
    ), f"the resume is not reported as the README says: {first}"
    replayed = [reader.next_event(running).get("id") for _ in missed]
    assert replayed == missed, f"replayed {replayed}, missed {missed}"
    reader.subscriber, reader.subscribed = running, subscribed
    return f"streaming; resumed, {len(missed)} replayed"


def publish(reader: Reader, command: Command) -> str:
    """A publish (twice when idempotent: the same id each time); the open subscriber prints
    the event."""
    request = request_of(command)
    idempotent = "idempotencyKey" in request or "idempotency_key" in request
    answers = [reader.unary(command) for _ in range(2 if idempotent else 1)]
    assert all(answer == answers[0] for answer in answers), f"not the same id: {answers}"
    if reader.published is None:
        # "A few more events" are new ones: without the key that would make them one.
        reader.published = {k: v for k, v in request.items() if k != "idempotencyKey"}
    if reader.subscriber is not None:
        event = reader.next_event(reader.subscriber)
        assert event.get("id") == answers[0].get("id"), f"the subscriber printed {event}"
        assert event.get("json") == request.get("json"), f"the subscriber printed {event}"
    return "the subscriber printed it" if reader.subscriber else "ok"


def list_services(reader: Reader, command: Command) -> str:
    """The services, over reflection v1 (grpcurl's first choice); and v1alpha, which older
    grpcurl speaks, answers too (the README says the server speaks both)."""
    services = reader.run(command).stdout.splitlines()
    assert services == sorted(services), f"not in name order: {services}"
    missing = sorted(set(SERVICES) - set(services))
    assert not missing, f"`list` does not show {missing}: {services}"
    outcome = f"{len(services)} services"
    if parse_args(command.argv).plaintext:
        with grpc.insecure_channel(f"127.0.0.1:{reader.server_of(command).port}") as channel:
            v1alpha = Reflection(channel, (), WAIT, protocols=("v1alpha",)).list_services()
        assert "durable_iterator.v1.DurableIterator" in v1alpha, v1alpha
        outcome += f"; reflection v1alpha lists {len(v1alpha)}"
    return outcome


def health_check(reader: Reader, command: Command) -> str:
    answer = reader.unary(command)
    assert answer == {"status": "SERVING"}, answer
    return "SERVING"


def list_channels(reader: Reader, command: Command) -> str:
    """The channels the README lists get an event first: then the answer lists exactly them."""
    shown = (command.answer or {}).get("channels", [])
    for channel in shown:
        reader.admin("Publish", {"channel": channel, "json": {"text": "hello"}})
    answer = reader.unary(command)
    assert answer.get("channels", []) == shown, answer
    return f"{len(shown)} channels"


def presence(reader: Reader, command: Command) -> str:
    """The sessions the README shows (their tags, att and resumes) are the channel's live
    ones: the walk-through's subscriber stops, the test opens them."""
    channel = request_of(command)["channel"]
    shown = (command.answer or {}).get("sessions", [])
    reader.stop_subscriber()
    for session in shown:
        reader.open_session(
            channel,
            tags=session.get("tags", []),
            att=session.get("att"),
            resumes=int(session.get("resumes", "0")),
            exports=command.exports,
        )
    reader.wait_for_sessions(channel, len(shown))
    answer = reader.unary(command)
    for listed, session in zip(answer.get("sessions", []), shown, strict=True):
        for key in ("tags", "att", "resumes"):
            assert listed.get(key) == session.get(key), f"{key}: {listed} is not {session}"
    return f"{len(shown)} live sessions"


def _ended_disconnected(session: Session) -> None:
    finished = session.running.wait(WAIT)
    assert finished.status == STATUS_OFFSET + 7, finished.describe()  # PERMISSION_DENIED
    assert "Code: PermissionDenied" in finished.stderr, finished.describe()
    assert "Message: disconnected by the server" in finished.stderr, finished.describe()


def disconnect(reader: Reader, command: Command) -> str:
    """The session named (the one Presence listed) ends with PERMISSION_DENIED."""
    session_id = reader.carried.get("sessionId", "")
    assert session_id in reader.sessions, f"{session_id} is not a session the test opened"
    reader.unary(command)
    _ended_disconnected(reader.sessions.pop(session_id))
    return "its stream ended: PermissionDenied, disconnected by the server"


def disconnect_all(reader: Reader, command: Command) -> str:
    """As many live sessions as the README's answer counts; each ends with PERMISSION_DENIED."""
    channel = request_of(command)["channel"]
    count = int((command.answer or {}).get("disconnected", "1"))
    if reader.subscriber is not None:
        reader.stop_subscriber()
    for session in list(reader.sessions.values()):
        reader.sessions.pop(session.subscribed["sessionId"])
        session.running.interrupt(WAIT)
    opened = [
        reader.open_session(channel, tags=[], att=None, resumes=0, exports=command.exports)
        for _ in range(count)
    ]
    reader.wait_for_sessions(channel, count)
    answer = reader.unary(command)
    assert answer.get("disconnected") == str(count), answer
    for session in opened:
        _ended_disconnected(session)
    return f"{count} streams ended: PermissionDenied"


def invoke(reader: Reader, command: Command) -> str:
    """A method's answer is what the README prints, value for value."""
    answer = reader.unary(command)
    if command.answer is not None:
        assert answer == command.answer, answer
    return json.dumps(answer)


def unary(reader: Reader, command: Command) -> str:
    reader.unary(command)
    return "ok"


#: By method (or ``list``): what a command needs around it. Any other is one unary call.
STEPS: dict[str, Callable[[Reader, Command], str]] = {
    "Subscribe": subscribe,
    "Publish": publish,
    "list": list_services,
    "Check": health_check,
    "ListChannels": list_channels,
    "Presence": presence,
    "Disconnect": disconnect,
    "DisconnectAll": disconnect_all,
    "Invoke": invoke,
}


@contextmanager
def reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Reader]:
    """A reader, its processes ended afterwards; what ran printed either way (and the servers'
    logs when something failed)."""
    if not os.access(server_binary(), os.X_OK):
        _unavailable(
            f"the server binary {server_binary()} is missing (cargo build --bin durable-iterator)"
        )
    reader = Reader(tmp_path)
    try:
        yield reader
    except BaseException:
        print(reader.log())
        raise
    finally:
        reader.close()
        with capsys.disabled():
            print("\nREADME.md grpcurl commands run:\n" + "\n".join(reader.ran))


def walk(reader: Reader, selected: list[Command]) -> None:
    assert selected, "README.md has no grpcurl command for this test"
    for command in selected:
        step = STEPS.get(method_of(command), unary)
        reader.ran.append(f"  README.md:{command.line} [{command.section}] {command.text}")
        outcome = step(reader, command)
        reader.ran[-1] += f"\n      -> {outcome}"


def test_readme_grpcurl_commands_against_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The walk-through, TLS and the server API, in the README's order, on one `serve`."""
    selected = [c for c in commands(README) if SECTION_SERVERS.get(c.section) != "chat"]
    with reading(tmp_path, capsys) as reader:
        walk(reader, selected)


def test_readme_grpcurl_commands_against_the_chat_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The channel objects section, on the chat example."""
    selected = [c for c in commands(README) if SECTION_SERVERS.get(c.section) == "chat"]
    with reading(tmp_path, capsys) as reader:
        walk(reader, selected)


# ---- the parts, on their own ----------------------------------------------------------------

SAMPLE = """\
# Sample

    export KEY=one
    grpcurl -plaintext -d '{"a":1}' \\
      127.0.0.1:50051 pkg.Svc/Call

It answers `{"b": "2"}`.

    grpcurl -plaintext 127.0.0.1:50051 list
    echo grpcurl | grpcurl -plaintext -d @ 127.0.0.1:50051 pkg.Svc/Other

    {"c": [1, 2]}

## Next

    tool --not-grpcurl grpcurl
"""


def test_readme_parser_finds_commands_exports_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(SAMPLE)
    found = commands(path)
    assert [(c.line, c.section, c.argv[-1]) for c in found] == [
        (4, "Sample", "pkg.Svc/Call"),
        (9, "Sample", "list"),
        (10, "Sample", "pkg.Svc/Other"),
    ]
    assert found[0].text == "grpcurl -plaintext -d '{\"a\":1}' 127.0.0.1:50051 pkg.Svc/Call"
    assert all(c.exports == ("export KEY=one",) for c in found)
    assert [c.answer for c in found] == [{"b": "2"}, None, {"c": [1, 2]}]


def test_readme_shape_differences() -> None:
    printed = {"a": "1", "b": [{"c": 1}], "d": {}}
    assert shape_differences(printed, {"a": "9", "b": [{"c": 2}], "d": {}}) == []
    assert shape_differences(printed, {"a": 9, "b": [{"c": 2}], "d": {}}) == [
        ".a: the README prints a string, the answer is 9"
    ]
    assert shape_differences(printed, {"a": "1", "b": [], "e": True}) == [
        "the answer: no d in the answer",
        "the answer: the README does not print e",
        ".b: the README prints 1 items, the answer has 0",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["-plaintext", "-v", "127.0.0.1:1", "list"],
        ["-plaintext", "127.0.0.1:1", "describe", "pkg.Svc"],
        ["-format", "text", "-plaintext", "127.0.0.1:1", "list"],
        ["-plaintext", "-cacert", "ca.pem", "127.0.0.1:1", "list"],
        ["-plaintext", "127.0.0.1:1"],
        ["-plaintext", "127.0.0.1:1", "pkg.Svc/Call", "extra"],
    ],
)
def test_readme_grpcurl_stand_in_refuses_what_it_does_not_do(argv: list[str]) -> None:
    """A command line the stand-in does not take exits 2 before dialling anything."""
    err = StringIO()
    assert run(argv, BytesIO(), StringIO(), err) == USAGE_STATUS
    assert "Try 'grpcurl -help'" in err.getvalue()
