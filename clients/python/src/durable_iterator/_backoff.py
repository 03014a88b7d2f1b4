"""The reconnect schedule: first retry at once, then exponential backoff with full jitter,
capped. Pure: the random draw is passed in, so the schedule is tested as a table."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """How long to wait between reconnect attempts, and how many to make.

    Retry ``n`` (1-based, counted since the stream last proved itself) waits a uniform random
    time in ``[0, ceiling(n)]``, where ``ceiling(1) = 0`` (the first retry goes at once: most
    breaks are a server restart or a dropped connection, gone by the time we retry) and
    ``ceiling(n) = min(cap, base * 2**(n - 2))`` after that. Full jitter spreads the clients of a
    restarted server over the whole window instead of letting them arrive in waves.

    Times are in seconds, like every duration of this package's API.
    """

    #: The ceiling of the second retry; each later one doubles it.
    base: float = 1.0
    #: No wait is longer than this.
    cap: float = 10.0
    #: Retries in a row before giving up with ``RetriesExhaustedError``; ``None`` retries
    #: forever.
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError(f"backoff base and cap must not be negative: {self}")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"max_attempts must not be negative: {self.max_attempts}")

    def ceiling_ms(self, retry: int) -> int:
        """The longest wait before retry ``retry`` (1-based), in milliseconds; 0 for the first."""
        if retry <= 1:
            return 0
        base_ms = round(self.base * 1000)
        cap_ms = round(self.cap * 1000)
        # 2**(retry - 2) grows without bound in Python: stop doubling once past the cap.
        exponent = min(retry - 2, 64)
        return min(cap_ms, base_ms << exponent)

    def delay_ms(self, retry: int, unit: float) -> int:
        """The wait before retry ``retry`` given a uniform draw ``unit`` in ``[0, 1)`` (full
        jitter), in milliseconds."""
        return int(self.ceiling_ms(retry) * _clamp(unit))

    def random_delay_ms(self, retry: int) -> int:
        """:meth:`delay_ms` with a fresh random draw."""
        return self.delay_ms(retry, random.random())

    def patient_delay_ms(self, retry: int, unit: float) -> int:
        """A wait of at least half the ceiling of retry ``max(retry, 2)`` (the other half
        jittered), in milliseconds: for retrying the token provider and ``RefreshToken``, which
        are never called again at once."""
        half = self.ceiling_ms(max(retry, 2)) // 2
        return half + int(half * _clamp(unit))

    def exhausted(self, retry: int) -> bool:
        """Whether retry ``retry`` (1-based) is beyond the attempt limit."""
        return self.max_attempts is not None and retry > self.max_attempts


def _clamp(unit: float) -> float:
    # NaN compares false both ways: it becomes 0, the safe end.
    if not unit > 0.0:
        return 0.0
    return min(unit, 1.0)
