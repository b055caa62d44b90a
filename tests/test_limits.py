"""Per-address handshake limits, the refused-handshake log throttle and the inbound audio
budget: pure rules on virtual time (every call passes ``now``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.audio_meter import DRIFT, AudioMeter
from server.limits import IpLimitConfig, IpLimits, LogThrottle, PendingPool, TokenBucket
from server.security import parse_networks

A, B = "203.0.113.7", "198.51.100.9"


def test_token_bucket_refills_at_its_rate_up_to_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(4))
    assert not bucket.take(1, 0.0)
    assert bucket.wait_s(1, 0.0) == pytest.approx(0.5)
    assert bucket.take(1, 0.5)
    assert not bucket.take(1, 0.5)
    assert bucket.full(100.0) and bucket.tokens == 4  # never above capacity
    assert not bucket.take(5, 100.0) and bucket.tokens == 4  # too much takes nothing


def test_handshake_rate_per_address() -> None:
    limits = IpLimits(IpLimitConfig(handshakes_per_s=10, handshake_burst=20))
    assert [limits.check_handshake(A, 0.0) for _ in range(20)] == [None] * 20
    verdict = limits.check_handshake(A, 0.0)
    assert verdict is not None and verdict.kind == "rate" and verdict.retry_after_s == 1
    assert limits.check_handshake(B, 0.0) is None  # another address has its own bucket
    assert limits.check_handshake(A, 0.1) is None  # one token back after 100 ms
    assert limits.check_handshake(A, 0.1) is not None


def test_refused_auth_bans_the_address_for_a_while() -> None:
    limits = IpLimits(IpLimitConfig(auth_failures=5, auth_window_s=60, ban_s=300))
    assert [limits.strike(A, float(t)) for t in range(5)] == [False] * 5
    assert limits.strike(A, 5.0) is True  # the sixth inside a minute
    assert limits.bans == 1
    verdict = limits.check_handshake(A, 6.0)
    assert verdict is not None and verdict.kind == "banned"
    assert verdict.retry_after_s == 299
    assert limits.strike(A, 7.0) is False  # already banned: no second ban
    assert limits.check_handshake(B, 6.0) is None  # only that address
    assert limits.check_handshake(A, 305.1) is None  # the ban ends


def test_slow_refusals_never_ban() -> None:
    """A misconfigured token refused once every few seconds is logged, not banned."""
    limits = IpLimits(IpLimitConfig(auth_failures=5, auth_window_s=60))
    assert not any(limits.strike(A, t * 13.0) for t in range(100))


def test_pending_streams_per_address() -> None:
    limits = IpLimits(IpLimitConfig(max_pending=3))
    for _ in range(3):
        assert limits.check_handshake(A, 0.0) is None
        limits.hold(A, 0.0)
    verdict = limits.check_handshake(A, 0.0)
    assert verdict is not None and verdict.kind == "pending"
    assert limits.check_handshake(B, 0.0) is None
    limits.release(A)
    assert limits.pending(A) == 2
    assert limits.check_handshake(A, 0.0) is None
    limits.release("never-seen")  # harmless


def test_allow_listed_addresses_are_exempt() -> None:
    limits = IpLimits(
        IpLimitConfig(
            handshakes_per_s=1,
            handshake_burst=1,
            max_pending=1,
            auth_failures=1,
            exempt=parse_networks(["198.51.100.0/24"]),
        )
    )
    for _ in range(50):
        assert limits.check_handshake(B, 0.0) is None
        limits.hold(B, 0.0)
        assert not limits.strike(B, 0.0)
    assert limits.tracked() == 0


def test_tracked_addresses_are_bounded() -> None:
    limits = IpLimits(IpLimitConfig(max_tracked=100))
    for n in range(1000):
        limits.check_handshake(f"10.0.{n // 256}.{n % 256}", float(n))
        assert limits.tracked() <= 100
    limits.hold("10.9.9.9", 2000.0)  # a held address is kept while idle ones go
    for n in range(200):
        limits.check_handshake(f"10.1.{n // 256}.{n % 256}", 3000.0 + n)
    assert limits.pending("10.9.9.9") == 1


def test_pending_pool_evicts_from_the_address_with_the_most_waiting() -> None:
    pool = PendingPool(capacity=4)
    flood = [pool.enter(A) for _ in range(3)]
    honest = pool.enter(B)
    newcomer = pool.enter(A)  # full: A's oldest goes, never B's
    assert flood[0].is_set() and not honest.is_set() and not newcomer.is_set()
    assert len(pool) == 4 and pool.evictions == 1
    for _ in range(100):  # a long flood from A churns only A's streams
        pool.enter(A)
    assert not honest.is_set()
    pool.leave(B, honest)
    pool.leave(B, honest)  # twice: harmless
    pool.leave(A, flood[0])  # evicted already: harmless
    assert len(pool) == 3


def test_pending_pool_from_many_addresses_stays_bounded() -> None:
    pool = PendingPool(capacity=10)
    events = [pool.enter(f"10.0.0.{n}") for n in range(100)]
    assert len(pool) == 10 and sum(e.is_set() for e in events) == 90


def test_log_throttle_one_line_per_key_and_window() -> None:
    throttle = LogThrottle(window_s=60, max_lines=3)
    assert throttle.allow("a", 0.0) == (True, 0)
    assert [throttle.allow("a", t) for t in (1.0, 2.0, 3.0)] == [(False, 0)] * 3
    assert throttle.allow("b", 4.0) == (True, 0)
    assert throttle.allow("c", 5.0) == (True, 0)
    assert throttle.allow("d", 6.0) == (False, 0)  # three lines this minute: held
    assert throttle.allow("a", 61.0) == (True, 3 + 1)  # its own 3, and d's


def test_log_throttle_bounds_a_flood_from_many_addresses() -> None:
    throttle = LogThrottle(window_s=60, max_lines=20, max_keys=50)
    logged = sum(throttle.allow(f"10.0.0.{n % 250}", n / 200)[0] for n in range(2000))
    assert logged == 20  # 2000 refusals from 250 addresses in 10 s: one minute's budget


# --- the inbound audio budget (finding 8) -----------------------------------------------

FRAME = 640  # 20 ms at 16 kHz


def test_real_time_audio_always_passes() -> None:
    meter = AudioMeter(16000, burst_s=2.0, now=0.0)
    assert all(meter.admit(FRAME, i * 0.02) for i in range(50 * 600))  # ten minutes
    assert meter.dropped_frames == 0


def test_a_burst_is_allowed_then_the_excess_dropped() -> None:
    meter = AudioMeter(16000, burst_s=2.0, now=0.0)
    admitted = sum(meter.admit(FRAME, 0.0) for _ in range(500))  # 10 s sent at once
    assert admitted == 100  # 2 s of burst
    assert meter.dropped_frames == 400
    assert meter.seconds(meter.passed_bytes) == pytest.approx(2.0)


def test_ten_times_real_time_is_cut_to_real_time() -> None:
    meter = AudioMeter(8000, burst_s=2.0, now=0.0)
    frame = 320  # 20 ms at 8 kHz
    t = 0.0
    for _ in range(5000):  # 100 s of audio sent in 10 s
        meter.admit(frame, t)
        t += 0.002
    forwarded = meter.seconds(meter.passed_bytes)
    assert forwarded == pytest.approx(2.0 + 10 * DRIFT, abs=0.05)


def test_jitter_within_the_burst_loses_nothing() -> None:
    """Frames held up by the network for a second, then delivered at once."""
    meter = AudioMeter(16000, burst_s=2.0, now=0.0)
    t, sent = 0.0, 0
    for second in range(30):
        batch = 50 if second % 3 else 0  # every third second nothing, then two seconds' worth
        batch = 100 if second % 3 == 1 else batch
        for _ in range(batch):
            assert meter.admit(FRAME, t)
            sent += 1
        t += 1.0
    assert meter.dropped_frames == 0 and sent > 0


@given(st.lists(st.tuples(st.integers(0, 4000), st.floats(0, 0.5)), max_size=300))
def test_forwarded_audio_never_exceeds_the_budget(frames: list[tuple[int, float]]) -> None:
    meter = AudioMeter(16000, burst_s=1.5, now=0.0)
    t = 0.0
    for size, gap in frames:
        t += gap
        meter.admit(size, t)
    assert meter.seconds(meter.passed_bytes) <= 1.5 + t * DRIFT + 1e-9
    assert meter.passed_bytes + meter.dropped_bytes == sum(size for size, _ in frames)
