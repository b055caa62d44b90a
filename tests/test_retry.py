"""The one retry policy and the phase clock every streamed provider read is timed by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from pipeline.providers.base import ProviderTimeout
from pipeline.retry import PhaseClock, RetryPolicy, time_limit


def test_backoff_is_capped_exponential_with_equal_jitter() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0, jitter="equal")
    assert policy.backoff(1, lambda: 0.0) == 0.5
    assert policy.backoff(1, lambda: 1.0) == 1.0
    assert policy.backoff(4, lambda: 1.0) == 8.0
    assert policy.backoff(51, lambda: 1.0) == 60.0
    assert 30.0 <= policy.backoff(1001) <= 60.0


def test_backoff_without_jitter_doubles_and_full_jitter_may_be_zero() -> None:
    plain = RetryPolicy(base_s=0.1, cap_s=2.0)
    assert [plain.backoff(n) for n in (1, 2, 3, 5, 6, 9)] == pytest.approx(
        [0.1, 0.2, 0.4, 1.6, 2.0, 2.0]
    )
    full = RetryPolicy(base_s=1.0, jitter="full")
    assert full.backoff(3, lambda: 0.0) == 0.0
    assert full.backoff(3, lambda: 0.5) == 2.0


def test_delay_honours_retry_after_the_deadline_and_the_attempt_limit() -> None:
    policy = RetryPolicy(base_s=0.1, min_attempt_s=0.3)
    assert policy.delay(1, now=0.0, deadline=2.5) == pytest.approx(0.1)
    assert policy.delay(1, retry_after_s=1.0, now=0.0, deadline=2.5) == pytest.approx(1.0)
    assert policy.delay(1, retry_after_s=0.01, now=0.0, deadline=2.5) == pytest.approx(0.1)
    # The server's wait plus a minimal attempt does not fit: give up at once.
    assert policy.delay(1, retry_after_s=2.5, now=0.0, deadline=2.5) is None
    assert policy.delay(3, now=2.0, deadline=2.5) is None
    deaf = RetryPolicy(base_s=0.1, honour_retry_after=False)
    assert deaf.delay(1, retry_after_s=30.0) == pytest.approx(0.1)
    limited = RetryPolicy(base_s=0.1, max_attempts=2)
    assert limited.delay(1) is not None and limited.delay(2) is None


async def _silent() -> AsyncGenerator[int, None]:
    await asyncio.sleep(10)
    yield 1


async def _items(*delays: float) -> AsyncGenerator[float, None]:
    for delay in delays:
        await asyncio.sleep(delay)
        yield delay


async def test_phase_clock_names_the_phase_that_ran_out() -> None:
    clock = PhaseClock("cartesia", "first_audio", 0.02, 0.02)
    stream = _silent()
    with pytest.raises(ProviderTimeout) as caught:
        await clock.next(stream)
    await stream.aclose()
    assert (caught.value.provider, caught.value.phase, caught.value.limit_s) == (
        "cartesia",
        "first_audio",
        0.02,
    )
    clock.result()
    stream = _silent()
    with pytest.raises(ProviderTimeout) as caught:
        await clock.next(stream)
    await stream.aclose()
    assert caught.value.phase == "idle"


async def test_phase_clock_does_not_count_the_consumer_and_ends_with_the_stream() -> None:
    clock = PhaseClock("openai", "first_token", 0.5, 0.05)
    items = _items(0.0, 0.0)
    assert await clock.next(items) == 0.0
    clock.result()
    await asyncio.sleep(0.1)  # the consumer is slow: longer than the idle gap
    assert await clock.next(items) == 0.0  # the gap starts when we wait again
    with pytest.raises(StopAsyncIteration):
        await clock.next(items)


async def test_phase_clock_opening_and_time_limit_raise_provider_timeouts() -> None:
    clock = PhaseClock("openai", "first_token", 0.02, 1.0)
    with pytest.raises(ProviderTimeout) as caught:
        async with clock.opening():
            await asyncio.sleep(1)
    assert (caught.value.phase, caught.value.limit_s) == ("first_byte", 0.02)
    with pytest.raises(ProviderTimeout) as caught:
        async with time_limit(0.02, "deepgram", "connect"):
            await asyncio.sleep(1)
    assert (caught.value.provider, caught.value.phase) == ("deepgram", "connect")
