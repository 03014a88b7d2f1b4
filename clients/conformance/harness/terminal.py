"""A reader's terminal for the README's commands: bash in a directory laid out like the
repository (``./target/release/durable-iterator`` is the server binary under test), with
``grpcurl`` on PATH being the stand-in (``harness.grpcurl``) and no DURABLE_ITERATOR_* variable
but those the README's own ``export`` lines set.

A command runs to its end (``run``), or in the background (``start``) while its output is read
as it comes, message by message, and Ctrl-C ends it (SIGINT to its process group, as a
terminal sends it)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: The suite's directory: what the stand-in's ``harness`` package is imported from.
_SUITE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finished:
    """A command that ended: its exit status (negative: the signal that ended it) and output."""

    script: str
    status: int
    stdout: str
    stderr: str

    def messages(self) -> list[Any]:
        """The JSON values it printed, in order."""
        return _json_values(self.stdout)[0]

    def describe(self) -> str:
        return (
            f"$ {self.script}\nexit status {self.status}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


def _json_values(text: str) -> tuple[list[Any], str]:
    """The complete JSON values at the start of ``text``, and what follows them."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return values, text[at:]
        values.append(value)
        at = end


class Running:
    """A command in the background; its stdout read into JSON messages as they come."""

    def __init__(self, script: str, process: subprocess.Popen[str]) -> None:
        self.script = script
        self.process = process
        self._lock = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._taken = 0  # messages handed out by next_message
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        while True:
            chunk = stream.readline()  # grpcurl ends each message with a newline
            with self._lock:
                if not chunk:
                    self._lock.notify_all()
                    return
                into.append(chunk)
                self._lock.notify_all()

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def messages(self) -> list[Any]:
        """Every complete JSON message printed so far."""
        return _json_values(self.stdout)[0]

    def next_message(self, timeout: float) -> Any:
        """The next message not handed out yet, waiting at most ``timeout`` seconds for it;
        AssertionError (with what the command printed) if none comes."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                values = _json_values("".join(self._stdout))[0]
                if len(values) > self._taken:
                    self._taken += 1
                    return values[self._taken - 1]
                left = deadline - time.monotonic()
                ended = self.process.poll() is not None and not any(
                    reader.is_alive() for reader in self._readers
                )
                if ended or left <= 0:
                    break
                self._lock.wait(min(left, 0.5))
        why = "it ended" if self.process.poll() is not None else f"none within {timeout} s"
        raise AssertionError(f"no further message ({why}):\n{self.describe()}")

    def interrupt(self, timeout: float) -> Finished:
        """Ctrl-C, and its end."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float) -> Finished:
        """Its end, waiting at most ``timeout`` seconds (then it is killed, and this fails)."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not end within {timeout} s:\n{self.describe()}") from None
        for reader in self._readers:
            reader.join(timeout)
        return Finished(self.script, status, self.stdout, self.stderr)

    def kill(self) -> None:
        """SIGKILL to its process group; a no-op once it ended."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def describe(self) -> str:
        status = self.process.poll()
        return (
            f"$ {self.script}\n{'running' if status is None else f'exit status {status}'}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


class Terminal:
    """The directory ``root``, made to look like the repository for the README's commands."""

    def __init__(self, root: Path, binary: Path) -> None:
        self.root = root
        release = root / "target" / "release"
        release.mkdir(parents=True)
        (release / "durable-iterator").symlink_to(binary)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        grpcurl = bin_dir / "grpcurl"
        grpcurl.write_text(
            "#!/bin/sh\n"
            "# The grpcurl stand-in of the conformance suite (harness/grpcurl.py).\n"
            f"PYTHONPATH={shlex.quote(str(_SUITE))} "
            f'exec {shlex.quote(sys.executable)} -m harness.grpcurl "$@"\n'
        )
        grpcurl.chmod(0o755)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("DURABLE_ITERATOR_") and name != "PYTHONPATH"
        }
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        self._env = env
        self.running: list[Running] = []

    def _popen(self, script: str, exports: Sequence[str]) -> subprocess.Popen[str]:
        # pipefail: a failing `durable-iterator token` before `| grpcurl` fails the command.
        program = "\n".join(["set -o pipefail", *exports, script])
        return subprocess.Popen(
            ["bash", "-c", program],
            cwd=self.root,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, for Ctrl-C
        )

    def run(self, script: str, exports: Sequence[str] = (), timeout: float = 60.0) -> Finished:
        """Runs ``script`` to its end (killed, and a failure, after ``timeout`` seconds)."""
        return self.start(script, exports).wait(timeout)

    def start(self, script: str, exports: Sequence[str] = ()) -> Running:
        """Runs ``script`` in the background."""
        running = Running(script, self._popen(script, exports))
        self.running.append(running)
        return running

    def grpcurl(self, *argv: str, stdin: str | None = None, timeout: float = 60.0) -> Finished:
        """The stand-in with ``argv`` (a call of the test's own, not the README's)."""
        script = shlex.join(["grpcurl", *argv])
        if stdin is not None:
            script = f"printf '%s' {shlex.quote(stdin)} | {script}"
        return self.run(script, timeout=timeout)

    def close(self) -> None:
        """Kills whatever still runs."""
        for running in self.running:
            running.kill()
