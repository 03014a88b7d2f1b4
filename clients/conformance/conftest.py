"""Fixtures of the conformance suite: each test gets one client (parametrized: rust, typescript,
python) and a harness that owns every process and thread the test starts, and ends them all,
by pid, when the test ends, passed or failed."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

from harness.nodes import Balancer, Endpoint, RedisServer, redis_available
from harness.clients import CLIENT_NAMES, ClientCommand, ClientProcess, client_command, server_binary
from harness.publisher import BackgroundPublisher, Publisher
from harness.server import Server
from harness.tokens import TokenServer

SIGNING_KEY = "conformance-signing-key"
API_KEY = "conformance-api-key"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    """A client or the server cannot run here: a failure in CI, a skip elsewhere."""
    if _in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=CLIENT_NAMES)
def command(request: pytest.FixtureRequest) -> ClientCommand:
    """The client under test: how to run its ``subscribe`` command."""
    binary = server_binary()
    if not os.access(binary, os.X_OK):
        _unavailable(f"the server binary {binary} is missing (cargo build --bin durable-iterator)")
    name: str = request.param
    cmd = client_command(name)
    if cmd.missing is not None:
        _unavailable(f"the {name} client cannot run: {cmd.missing}")
    return cmd


class Harness:
    """Starts what a scenario needs and remembers it, to end it all afterwards."""

    def __init__(self, workdir: Path, command: ClientCommand, channel: str) -> None:
        self.workdir = workdir
        self.command = command
        self.channel = channel
        self.servers: list[Server] = []
        self.clients: list[ClientProcess] = []
        self.publishers: list[Publisher] = []
        self.background: list[BackgroundPublisher] = []
        self.token_servers: list[TokenServer] = []
        self.redis_servers: list[RedisServer] = []
        self.balancers: list[Balancer] = []

    def server(
        self,
        *,
        heartbeat_seconds: int | None = None,
        subscriber_queue: int | None = None,
        rust_log: str | None = None,
        redis: RedisServer | None = None,
    ) -> Server:
        """A started server with a data directory of its own, or a node on ``redis``."""
        workdir = self.workdir / f"server{len(self.servers)}"
        workdir.mkdir()
        server = Server(
            server_binary(),
            workdir,
            signing_key=SIGNING_KEY,
            api_key=API_KEY,
            heartbeat_seconds=heartbeat_seconds,
            subscriber_queue=subscriber_queue,
            extra_env={
                **({"RUST_LOG": rust_log} if rust_log else {}),
                **(
                    {"DURABLE_ITERATOR_STORE": "redis", "DURABLE_ITERATOR_REDIS_URL": redis.url}
                    if redis
                    else {}
                ),
            },
        )
        self.servers.append(server)
        server.start()
        return server

    def redis(self) -> RedisServer:
        """A started redis-server of the test's own (a skip, or a failure in CI, without
        one)."""
        missing = redis_available()
        if missing is not None:
            _unavailable(missing)
        workdir = self.workdir / f"redis{len(self.redis_servers)}"
        workdir.mkdir()
        redis = RedisServer(workdir)
        self.redis_servers.append(redis)
        redis.start()
        return redis

    def balancer(self, backends: Sequence[Endpoint]) -> Balancer:
        """A load balancer in front of ``backends``; its first connection goes to the first."""
        balancer = Balancer(backends)
        self.balancers.append(balancer)
        return balancer

    def publisher(self, server: Server) -> Publisher:
        publisher = Publisher(server.url, API_KEY)
        self.publishers.append(publisher)
        return publisher

    def background_publisher(self, server: Server, interval: float = 0.02) -> BackgroundPublisher:
        background = BackgroundPublisher(self.publisher(server), self.channel, interval)
        self.background.append(background)
        return background.start()

    def token_server(
        self, *, tags: Sequence[str] | None = None, ttls: Sequence[int]
    ) -> TokenServer:
        tokens = TokenServer(SIGNING_KEY, self.channel, tags=tags, ttls=ttls)
        self.token_servers.append(tokens)
        return tokens

    def subscribe(self, server: Endpoint, *args: str, debug: bool = True) -> ClientProcess:
        """The client's ``subscribe`` command against ``server``; without a token source in
        ``args`` it mints its own tokens for the test's channel (``--channel``). Its debug
        logs are on (stderr lines that do not start with ``{``): shown when a test fails."""
        argv = ["--server", server.url, *args]
        if not {"--token", "--token-url", "--channel"} & set(args):
            argv += ["--channel", self.channel, "--signing-key", SIGNING_KEY]
        client = ClientProcess(self.command, argv, debug=debug)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Ends everything, clients first (by pid), then publishers, token and gRPC servers."""
        errors: list[BaseException] = []
        for client in self.clients:
            try:
                client.kill()
            except BaseException as error:  # noqa: BLE001 (end the others too)
                errors.append(error)
        for background in self.background:
            try:
                background.stop()
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
        for publisher in self.publishers:
            publisher.close()
        for tokens in self.token_servers:
            tokens.close()
        for balancer in self.balancers:
            balancer.close()
        for server in self.servers:
            try:
                server.kill()
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
        for redis in self.redis_servers:
            try:
                redis.kill()
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
        if errors:
            raise errors[0]

    def report(self) -> str:
        """What every process printed: shown by pytest when the test failed."""
        parts = [client.describe(tail=60) for client in self.clients]
        for server in self.servers:
            text = server.log_text()
            parts.append(f"server {server.workdir.name} log (tail):\n{text[-4000:]}")
        return "\n\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keeps each phase's report on the test item, for the harness to tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _went_wrong(item: pytest.Item) -> bool:
    """Whether the test's setup or body failed (an expected failure, xfail, included)."""
    for when in ("setup", "call"):
        report = getattr(item, f"report_{when}", None)
        if report is not None and (report.failed or hasattr(report, "wasxfail") and report.skipped):
            return True
    return False


@pytest.fixture
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, command: ClientCommand
) -> Iterator[Harness]:
    scenario = request.node.originalname.removeprefix("test_").replace("_", "-")
    h = Harness(tmp_path, command, f"{scenario}-{command.name}")
    try:
        yield h
    finally:
        report = h.report()
        h.close()
        if _went_wrong(request.node):
            print(report)  # pytest shows it with the failure
