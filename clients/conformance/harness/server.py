"""The real server, as a process the test owns: start, kill -9, restart on the same port and data
directory, pause (SIGSTOP) and continue, stop. The chat example (``ChatServer``) the same way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import IO


#: Longest wait for the server to say it listens (a debug build on a busy 2-core machine).
START_TIMEOUT_SECONDS = 30.0
#: How long a restart retries a port that is not free yet.
BIND_RETRY_SECONDS = 10.0


class ServerError(RuntimeError):
    """The server did not start (its log is in the message)."""


class Server:
    """``durable-iterator serve`` on 127.0.0.1: the first start picks a free port, every later
    start binds that same port again, on the same data directory unless it was deleted."""

    #: What the server prints once it listens, with its port.
    listening = re.compile(r"durable-iterator listening on 127\.0\.0\.1:(\d+)")

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        *,
        signing_key: str,
        api_key: str,
        heartbeat_seconds: int | None = None,
        subscriber_queue: int | None = None,
        retention_seconds: int = 3600,
        shutdown_grace_seconds: int = 5,
        extra_env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.extra_args = extra_args
        self.signing_key = signing_key
        self.api_key = api_key
        self.heartbeat_seconds = heartbeat_seconds
        self.subscriber_queue = subscriber_queue
        self.retention_seconds = retention_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.extra_env = extra_env or {}
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "the server has not started yet"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def _argv(self) -> list[str]:
        argv = [
            str(self.binary),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port or 0}",
            "--data-dir",
            str(self.data_dir),
            "--signing-key",
            self.signing_key,
            "--api-key",
            self.api_key,
            "--retention-seconds",
            str(self.retention_seconds),
            "--shutdown-grace-seconds",
            str(self.shutdown_grace_seconds),
        ]
        if self.heartbeat_seconds is not None:
            argv += ["--heartbeat-seconds", str(self.heartbeat_seconds)]
        if self.subscriber_queue is not None:
            argv += ["--subscriber-queue", str(self.subscriber_queue)]
        return [*argv, *self.extra_args]

    def _env(self) -> dict[str, str]:
        """What the run's environment adds to the caller's (less its DURABLE_ITERATOR_*)."""
        return self.extra_env

    def log_text(self) -> str:
        """Everything every run of the server printed so far."""
        texts = []
        for path in sorted(self.workdir.glob("server-*.log")):
            texts.append(f"--- {path.name}\n" + path.read_text(errors="replace"))
        return "\n".join(texts)

    def start(self) -> None:
        """Starts the server and waits until it listens; a restart binds the same port, retrying
        while the port is not free yet."""
        assert self.process is None, "the server is already running"
        deadline = time.monotonic() + BIND_RETRY_SECONDS
        while True:
            if self._start_once():
                return
            if self.port is None or time.monotonic() > deadline:
                raise ServerError(f"the server did not start:\n{self.log_text()}")
            time.sleep(0.2)

    def _start_once(self) -> bool:
        self.starts += 1
        self._log_path = self.workdir / f"server-{self.starts:02d}.log"
        self._log = self._log_path.open("wb")
        env = dict(os.environ)
        # Nothing from the caller's environment may configure the server but what we pass.
        for name in list(env):
            if name.startswith("DURABLE_ITERATOR_"):
                del env[name]
        env.setdefault("RUST_LOG", "info")
        env.update(self._env())
        self.process = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            match = self.listening.search(self._log_path.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
                assert self.port in (None, port), f"restarted on port {port}, not {self.port}"
                self.port = port
                return True
            if self.process.poll() is not None:
                self._reap()
                return False
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"the server did not listen within {START_TIMEOUT_SECONDS} s")

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """kill -9 (and continue it first, should it be paused); a no-op if not running."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
                self.process.send_signal(signal.SIGCONT)
            self._reap()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, and wait for the exit (kill -9 after ``timeout``); the exit status."""
        assert self.process is not None, "the server is not running"
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reap()
        return status

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class ChatServer(Server):
    """The chat example (``examples/chat``), configured as its docs say: the keys and the
    address in DURABLE_ITERATOR_* variables, its history in memory."""

    listening = re.compile(r"chat server listening on 127\.0\.0\.1:(\d+)")

    def _argv(self) -> list[str]:
        return [str(self.binary)]

    def _env(self) -> dict[str, str]:
        return {
            **self.extra_env,
            "DURABLE_ITERATOR_SIGNING_KEY": self.signing_key,
            "DURABLE_ITERATOR_API_KEY": self.api_key,
            "DURABLE_ITERATOR_LISTEN": f"127.0.0.1:{self.port or 0}",
        }
