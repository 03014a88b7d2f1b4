"""Several nodes on one Redis behind a load balancer, as a deployment looks to its clients: a
``redis-server`` of the test's own (append-only, fsync always) and a TCP balancer that hands
each new connection to the next node that accepts it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

#: Longest wait for redis-server to listen.
START_TIMEOUT_SECONDS = 10.0


class Endpoint(Protocol):
    """Something a client connects to: a server, or a balancer in front of several."""

    @property
    def url(self) -> str: ...


def redis_available() -> str | None:
    """Why the Redis tests cannot run here, or ``None``."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` on a free loopback port, its data in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(10):
            self.port = _free_port()
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--protected-mode", "no", "--appendonly", "yes",
                 "--appendfsync", "always", "--dir", str(self.workdir)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.02)
            self.kill()  # the port was taken meanwhile: another one
        raise RuntimeError("redis-server did not start on a free port")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies until either side closes, then closes both."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for side in (source, sink):
            try:
                side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            side.close()


class Balancer:
    """A TCP load balancer on a loopback port: the first connection goes to ``backends[0]``,
    each next one to the next backend that accepts it."""

    def __init__(self, backends: Sequence[Endpoint]) -> None:
        self._backends = [
            (host, int(port))
            for host, port in (
                b.url.removeprefix("http://").rsplit(":", 1) for b in backends
            )
        ]
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._next = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _connect(self) -> socket.socket | None:
        for offset in range(len(self._backends)):
            at = (self._next + offset) % len(self._backends)
            try:
                outbound = socket.create_connection(self._backends[at], timeout=2)
            except OSError:
                continue
            outbound.settimeout(None)
            self._next = at + 1
            return outbound
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                inbound, _ = self._listener.accept()
            except OSError:
                return
            outbound = self._connect()
            if outbound is None:
                inbound.close()  # no node takes it: the client sees the connection close
                continue
            threading.Thread(target=_pump, args=(inbound, outbound), daemon=True).start()
            threading.Thread(target=_pump, args=(outbound, inbound), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
