"""The manual clock the state machine's tests run on, and the system clock."""

from __future__ import annotations

import asyncio

from durable_iterator import Clock, ManualClock, SystemClock

from .fakes import settle


async def test_manual_sleep_wakes_only_at_its_deadline() -> None:
    clock = ManualClock(1_000)
    sleep = asyncio.ensure_future(clock.sleep_until(1_500))
    await settle()
    assert not sleep.done() and clock.sleepers == 1 and clock.next_deadline_ms() == 1_500
    clock.advance(499)
    await settle()
    assert not sleep.done()
    clock.advance(1)
    await settle()
    assert sleep.done() and clock.sleepers == 0


async def test_a_past_deadline_returns_at_once_and_a_cancelled_sleep_is_gone() -> None:
    clock = ManualClock(1_000)
    await clock.sleep_until(1_000)
    sleep = asyncio.ensure_future(clock.sleep_until(5_000))
    await settle()
    sleep.cancel()
    await settle()
    assert clock.sleepers == 0 and clock.next_deadline_ms() is None


async def test_system_clock_is_a_clock() -> None:
    clock: Clock = SystemClock()
    assert isinstance(ManualClock(), Clock) and isinstance(clock, Clock)
    now = clock.now_ms()
    assert now > 1_600_000_000_000
    await clock.sleep_until(now)  # already due: no wait
