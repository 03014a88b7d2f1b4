"""The three clients' ``subscribe`` commands as processes: how to run each, and a process whose
stdout (events) and stderr (notices, logs) are read into lists as they come."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[3]

#: The clients, in the order the tests are parametrized.
CLIENT_NAMES = ("rust", "typescript", "python")


@dataclass(frozen=True)
class ClientCommand:
    """How to run one client's ``subscribe`` command: ``argv`` + the command's arguments."""

    name: str
    argv: tuple[str, ...]
    #: Why it cannot run here, or None.
    missing: str | None
    #: What turns its debug logs on (stderr lines that do not start with ``{``).
    debug_env: tuple[tuple[str, str], ...]


def server_binary() -> Path:
    return Path(os.environ.get("DURABLE_ITERATOR_BIN", REPO / "target/debug/durable-iterator"))


def python_venv() -> Path:
    return Path(os.environ.get("DURABLE_ITERATOR_VENV", REPO / "target/python-venv"))


@functools.lru_cache(maxsize=None)
def client_command(name: str) -> ClientCommand:
    """How to run client ``name`` here (looked up once per run)."""
    if name == "rust":
        binary = server_binary()
        return ClientCommand(
            name,
            (str(binary), "subscribe"),
            None if os.access(binary, os.X_OK) else f"{binary} is missing (cargo build)",
            (("RUST_LOG", "warn,durable_iterator_client=debug"),),
        )
    if name == "typescript":
        node = shutil.which("node")
        script = REPO / "clients/typescript/bin/durable-iterator-ts.js"
        built = REPO / "clients/typescript/dist/src/cli.js"
        missing = None
        if node is None:
            missing = "node is not on PATH"
        elif not built.exists():
            missing = f"{built} is missing (npm ci && npm run build in clients/typescript)"
        return ClientCommand(
            name,
            (node or "node", str(script), "subscribe"),
            missing,
            (("DURABLE_ITERATOR_LOG", "debug"),),
        )
    if name == "python":
        python = python_venv() / "bin/python"
        missing = None
        if not os.access(python, os.X_OK):
            missing = f"{python} is missing (bash clients/python/test.sh makes it)"
        else:
            probe = subprocess.run(
                [str(python), "-c", "import durable_iterator"],
                capture_output=True,
                timeout=60,
            )
            if probe.returncode != 0:
                missing = f"{python} cannot import durable_iterator: {probe.stderr.decode()}"
        return ClientCommand(
            name,
            (str(python), "-m", "durable_iterator", "subscribe"),
            missing,
            (("DURABLE_ITERATOR_LOG", "debug"),),
        )
    raise ValueError(f"unknown client {name!r}")


class WaitTimeout(AssertionError):
    """A bounded wait ran out."""


class ClientProcess:
    """A running ``subscribe`` command. Its stdout lines are parsed as events, its stderr lines
    that start with ``{`` as notices; other stderr lines are logs."""

    def __init__(
        self,
        command: ClientCommand,
        args: Sequence[str],
        *,
        debug: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.args = list(args)
        full_env = dict(os.environ)
        for name in list(full_env):
            if name.startswith("DURABLE_ITERATOR_") or name == "RUST_LOG":
                del full_env[name]
        if debug:
            full_env.update(dict(command.debug_env))
        full_env.update(env or {})
        self._cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.logs: list[str] = []
        #: Every stderr line, notices and logs, in order.
        self.stderr_lines: list[str] = []
        self.bad_stdout: list[str] = []
        #: stderr lines that start with ``{`` but are not a JSON object.
        self.bad_stderr: list[str] = []
        self._closed = 0
        self.process = subprocess.Popen(
            [*command.argv, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._on_stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._on_stderr)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    # ---- reading ---------------------------------------------------------------------------

    def _read(self, stream: IO[bytes], on_line: Callable[[str], None]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._cond:
                on_line(line)
                self._cond.notify_all()
        with self._cond:
            self._closed += 1
            self._cond.notify_all()

    def _on_stdout(self, line: str) -> None:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            self.bad_stdout.append(line)
            return
        if isinstance(value, dict) and set(value) == {"id", "payload", "published_at_ms"}:
            self.events.append(value)
        else:
            self.bad_stdout.append(line)

    def _on_stderr(self, line: str) -> None:
        self.stderr_lines.append(line)
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                self.bad_stderr.append(line)
                return
            if isinstance(value, dict):
                self.notices.append(value)
            else:
                self.bad_stderr.append(line)
        else:
            self.logs.append(line)

    # ---- what was printed ------------------------------------------------------------------

    def notices_of(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of the notices ``{kind: {...}}``."""
        with self._cond:
            return [notice[kind] for notice in self.notices if kind in notice]

    def connected(self) -> list[dict[str, Any]]:
        return self.notices_of("connected")

    def connections(self) -> int:
        """The highest ``connections`` printed (0 before the first)."""
        return max((int(line["connections"]) for line in self.connected()), default=0)

    def event_ids(self) -> list[str]:
        with self._cond:
            return [str(event["id"]) for event in self.events]

    def describe(self, tail: int = 40) -> str:
        """The end of what the command printed, for a failure message."""
        with self._cond:
            status = self.process.poll()
            lines = [
                f"client {self.command.name}: {' '.join([*self.command.argv, *self.args])}",
                f"exit status: {status}",
                f"{len(self.events)} events printed; last: "
                + ", ".join(str(e["id"]) for e in self.events[-3:]),
                "stderr (last lines):",
                *("  " + line[:400] for line in self.stderr_lines[-tail:]),
            ]
            if self.bad_stdout:
                lines += ["stdout lines that are not events:", *self.bad_stdout[:10]]
            if self.bad_stderr:
                lines += ["stderr lines that start with { but are not JSON objects:",
                          *self.bad_stderr[:10]]
        return "\n".join(lines)

    # ---- waiting ---------------------------------------------------------------------------

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Waits until ``predicate()`` (evaluated whenever a line arrives, and every 0.2 s);
        fails with what the client printed when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout} s waiting for {what}\n"
                                      + self.describe())
                if self._closed == 2 and self.process.poll() is not None:
                    # Nothing more will come.
                    raise WaitTimeout(f"the client exited while waiting for {what}\n"
                                      + self.describe())
                self._cond.wait(min(left, 0.2))

    def wait_connections(self, count: int, timeout: float) -> None:
        self.wait_for(f"connections >= {count}", lambda: self.connections() >= count, timeout)

    def wait_events(self, ids: Sequence[str], timeout: float) -> None:
        """Waits until every id in ``ids`` was printed."""
        wanted = set(ids)

        def done() -> bool:
            return wanted <= {str(event["id"]) for event in self.events}

        try:
            self.wait_for(f"{len(wanted)} events", done, timeout)
        except WaitTimeout as timeout_error:
            printed = set(self.event_ids())
            missing = [i for i in ids if i not in printed]
            raise WaitTimeout(
                f"{len(missing)} of the events never printed, first {missing[:5]}\n"
                + str(timeout_error)
            ) from None

    # ---- signals and exit ------------------------------------------------------------------

    def send(self, signum: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit status; fails (and kills) after ``timeout``."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WaitTimeout(f"the client did not exit within {timeout} s\n" + self.describe())
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def kill(self) -> None:
        """kill -9 (continued first, should it be stopped); waits for it. A no-op once exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.send_signal(signal.SIGCONT)
        self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
