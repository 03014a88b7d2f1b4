"""The reconnect schedule as tables (the same tables as the Rust client's)."""

from __future__ import annotations

import pytest

from durable_iterator import Backoff


def test_schedule_table() -> None:
    backoff = Backoff()
    # (retry, ceiling ms): at once, then 1 s doubling, capped at 10 s.
    table = [(0, 0), (1, 0), (2, 1_000), (3, 2_000), (4, 4_000), (5, 8_000), (6, 10_000),
             (7, 10_000), (40, 10_000), (2**32, 10_000)]
    for retry, ceiling in table:
        assert backoff.ceiling_ms(retry) == ceiling, f"retry {retry}"


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    # (retry, unit draw, delay ms)
    table = [(1, 0.99, 0), (2, 0.0, 0), (2, 0.5, 50), (3, 0.25, 50), (4, 0.999, 399),
             (9, 0.5, 500), (9, 7.0, 1_000), (9, -1.0, 0), (9, float("nan"), 0)]
    for retry, unit, delay in table:
        assert backoff.delay_ms(retry, unit) == delay, f"retry {retry}, draw {unit}"
    for retry in range(20):
        assert 0 <= backoff.random_delay_ms(retry) <= backoff.ceiling_ms(retry)


def test_patient_delays_never_go_at_once() -> None:
    backoff = Backoff()
    # (retry, unit draw, delay ms): at least half the ceiling, the first retry included.
    table = [(0, 0.0, 500), (1, 0.0, 500), (2, 0.0, 500), (2, 1.0, 1_000), (4, 0.5, 3_000),
             (9, 0.0, 5_000)]
    for retry, unit, delay in table:
        assert backoff.patient_delay_ms(retry, unit) == delay, f"retry {retry}, draw {unit}"


def test_attempt_limit() -> None:
    assert not Backoff().exhausted(2**32)
    three = Backoff(max_attempts=3)
    for retry, exhausted in [(1, False), (3, False), (4, True), (100, True)]:
        assert three.exhausted(retry) is exhausted, f"retry {retry}"
    assert Backoff(max_attempts=0).exhausted(1)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base=-1)
    with pytest.raises(ValueError):
        Backoff(max_attempts=-1)
