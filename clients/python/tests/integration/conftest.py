"""The real server as a child process: ``DURABLE_ITERATOR_BIN`` (default
``<repo>/target/debug/durable-iterator``), and the chat example (``DURABLE_ITERATOR_CHAT_BIN``,
default the ``chat`` binary beside it or in its ``examples/``). Each test gets its own server on
``127.0.0.1:0`` with its own data directory, killed by pid at the end; every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

import durable_iterator as di

REPO = Path(__file__).resolve().parents[4]
SIGNING_KEY = "integration-signing-key"
API_KEY = "integration-api-key"
#: The bound of every wait in these tests: far beyond what any step needs.
WAIT = 30.0

T = TypeVar("T")


def server_binary() -> Path:
    return Path(os.environ.get("DURABLE_ITERATOR_BIN", REPO / "target/debug/durable-iterator"))


def chat_binary() -> Path:
    if "DURABLE_ITERATOR_CHAT_BIN" in os.environ:
        return Path(os.environ["DURABLE_ITERATOR_CHAT_BIN"])
    beside = server_binary().parent
    for candidate in (beside / "chat", beside / "examples" / "chat"):
        if candidate.exists():
            return candidate
    return beside / "examples" / "chat"


async def within(awaitable: Awaitable[T], seconds: float = WAIT) -> T:
    """``awaitable``, or a test failure after ``seconds``."""
    return await asyncio.wait_for(awaitable, seconds)


class Server:
    """One server process."""

    def __init__(self, binary: Path, data_dir: Path, args: list[str], *, chat: bool = False) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.args = args
        self.chat = chat
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Starts it (on the same port as before, after a restart) and waits until it listens."""
        listen = f"127.0.0.1:{self.port}"
        env = dict(os.environ)
        if self.chat:
            command = [str(self.binary)]
            env.update(
                DURABLE_ITERATOR_SIGNING_KEY=SIGNING_KEY,
                DURABLE_ITERATOR_API_KEY=API_KEY,
                DURABLE_ITERATOR_LISTEN=listen,
            )
        else:
            command = [
                str(self.binary), "serve", "--listen", listen, "--data-dir", str(self.data_dir),
                "--signing-key", SIGNING_KEY, "--api-key", API_KEY, "--retention-seconds", "3600",
                "--shutdown-grace-seconds", "5", *self.args,
            ]
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
            )
        assert self.process.stdout is not None
        line = (await within(self.process.stdout.readline(), 20)).decode()
        if "listening on" not in line:
            raise RuntimeError(f"{self.binary} did not start: {line!r}; see {self.log}")
        self.port = int(line.rsplit(":", 1)[1])
        self._drain = asyncio.ensure_future(self._drain_stdout())

    async def _drain_stdout(self) -> None:
        # Whatever else it prints must not fill the pipe and block the server.
        assert self.process is not None and self.process.stdout is not None
        while await self.process.stdout.read(65536):
            pass

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    async def kill(self) -> None:
        """kill -9, and waits until it is gone."""
        if self.process is None or self.process.returncode is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process dies as well, but do not leave it stopped
        self.process.kill()
        await within(self.process.wait(), 10)
        if self._drain is not None:
            await within(self._drain, 10)


ServerFactory = Callable[..., Awaitable[Server]]


def missing(reason: str) -> None:
    """A server binary is missing: skipped when run by hand, a failure in CI (``CI=true``),
    where a skipped integration suite would pass without testing anything."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Starts servers (``await start_server("--heartbeat-seconds", "1")``); kills them at the
    end."""
    binary = server_binary()
    if not binary.exists():
        missing(f"no server binary at {binary}: build it or set DURABLE_ITERATOR_BIN")
    servers: list[Server] = []

    async def start(*args: str, chat: bool = False) -> Server:
        exe = chat_binary() if chat else binary
        if chat and not exe.exists():
            missing(f"no chat example at {exe}: set DURABLE_ITERATOR_CHAT_BIN")
        server = Server(exe, tmp_path / f"server-{len(servers)}", list(args), chat=chat)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.kill()


class Watcher:
    """A consumer of a subscription that keeps what it got, and lets a test wait (bounded)
    until the items or the progress say something."""

    def __init__(self) -> None:
        self._sub: di.Subscription | None = None
        self.items: list[di.SubscriptionItem] = []
        self.error: BaseException | None = None
        self.progress: list[di.Progress] = []
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def sub(self) -> di.Subscription:
        assert self._sub is not None
        return self._sub

    def on_progress(self, progress: di.Progress) -> None:
        self.progress.append(progress)
        self._changed.set()

    def start(self) -> Watcher:
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        try:
            async for item in self.sub:
                self.items.append(item)
                self._changed.set()
        except di.ClientError as error:
            self.error = error
            self._changed.set()

    @property
    def events(self) -> list[di.Event]:
        return [item for item in self.items if isinstance(item, di.Event)]

    async def until(self, condition: Callable[[], bool], what: str, seconds: float = WAIT) -> None:
        async def wait() -> None:
            while not condition():
                if self.task is not None and self.task.done() and not condition():
                    raise AssertionError(f"the subscription ended ({self.error!r}) before {what}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await within(wait(), seconds)
        except asyncio.TimeoutError:
            raise AssertionError(f"not within {seconds} s: {what}; {self.sub.progress}") from None

    async def live(self) -> None:
        await self.until(lambda: self.sub.progress.state == di.Live(), "live")


def watch(client: di.Client, get_token: di.TokenProvider, **options: object) -> Watcher:
    """Subscribes and consumes in a task."""
    watcher = Watcher()
    watcher._sub = client.subscribe(get_token, on_progress=watcher.on_progress, **options)  # type: ignore[arg-type]
    return watcher.start()


def provider(channel: str = "room", **claims: object) -> di.SigningProvider:
    return di.SigningProvider(SIGNING_KEY, channel, **claims)  # type: ignore[arg-type]


@pytest.fixture
async def clients() -> AsyncIterator[list[di.Client | di.Admin]]:
    """Clients to close at the end."""
    made: list[di.Client | di.Admin] = []
    yield made
    for client in made:
        await client.close()
