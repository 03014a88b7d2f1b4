"""Time, injected: backoff, token refresh and liveness deadlines ask a :class:`Clock`, so tests
move time by hand (:class:`ManualClock`) instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time in Unix milliseconds, and waiting for a point of it."""

    def now_ms(self) -> int:
        """Now, in Unix milliseconds."""
        ...

    async def sleep_until(self, deadline_ms: int) -> None:
        """Returns once ``now_ms() >= deadline_ms`` (at once if it already is)."""
        ...


class SystemClock:
    """The real clock: the system time for now, asyncio timers for waiting."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline_ms: int) -> None:
        # Looping: the event loop's timers run on the monotonic clock and may wake a hair
        # before the wall clock reaches the deadline.
        while (remaining := deadline_ms - self.now_ms()) > 0:
            await asyncio.sleep(remaining / 1000)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: for tests of backoff, refresh and liveness.

    Sleeps wake (in deadline order) when :meth:`advance` or :meth:`set_ms` reaches their
    deadline; :attr:`sleepers` tells how many are waiting, so a test can check that nothing
    was left behind.
    """

    def __init__(self, now_ms: int = 0) -> None:
        self._now = now_ms
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._now

    async def sleep_until(self, deadline_ms: int) -> None:
        if self._now >= deadline_ms:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (deadline_ms, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            # Cancelled (or woken): either way it no longer waits.
            if entry in self._waiters:
                self._waiters.remove(entry)

    def advance(self, ms: int) -> None:
        """Moves the clock ``ms`` milliseconds forward, waking every sleep whose deadline has
        come. The woken tasks run at the event loop's next turns (``await asyncio.sleep(0)``)."""
        if ms < 0:
            raise ValueError("a ManualClock only advances; use set_ms to go back")
        self.set_ms(self._now + ms)

    def set_ms(self, now_ms: int) -> None:
        """Sets the clock to ``now_ms`` (forward or back), waking the sleeps that are due."""
        self._now = now_ms
        due = sorted(
            (entry for entry in self._waiters if entry[0] <= now_ms), key=lambda e: e[0]
        )
        for entry in due:
            self._waiters.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting."""
        return sum(1 for _, waiter in self._waiters if not waiter.done())

    def next_deadline_ms(self) -> int | None:
        """The earliest deadline a sleep waits for, if any."""
        waiting = [deadline for deadline, waiter in self._waiters if not waiter.done()]
        return min(waiting, default=None)

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self._now}, sleepers={self.sleepers})"
