from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from durable_iterator import ManualClock, SubscribeOptions, Subscription

from .fakes import START_MS, FakeTransport, Harness, Tokens, settle

MakeHarness = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[MakeHarness]:
    """Builds harnesses; at the end checks that each closed subscription left nothing behind."""
    made: list[Harness] = []

    def make(
        provider: object | None = None,
        *,
        random: Callable[[], float] = lambda: 0.5,
        **options: object,
    ) -> Harness:
        transport = FakeTransport()
        clock = ManualClock(START_MS)
        get_token = provider if provider is not None else Tokens()
        subscription = Subscription(
            transport,
            get_token,  # type: ignore[arg-type]
            SubscribeOptions(**options),  # type: ignore[arg-type]
            clock=clock,
            random=random,
        )
        harness = Harness(subscription, transport, clock)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.sub.aclose()
        await settle()
        assert harness.clock.sleepers == 0, "a timer was left behind"
        assert not harness.sub._tasks, f"tasks left behind: {harness.sub._tasks}"
        if harness.pending is not None:
            if not harness.pending.done():
                harness.pending.cancel()
            elif not harness.pending.cancelled():
                harness.pending.exception()  # looked at: no "never retrieved" warning
    await asyncio.sleep(0)
