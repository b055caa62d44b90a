"""Inbound audio metered against real time, so a caller cannot make us pay for more.

Deepgram bills per second of audio sent, and every second we forward costs CPU: a Stream
Node sends audio at the call's real-time rate, so anything much faster is either a bug
or abuse. Each call gets a token bucket of audio *time*: it fills at real time (with a
little slack for clock drift) up to ``burst_s`` seconds, which absorbs network jitter
and a late batch of frames. Frames beyond the budget are dropped whole, so samples stay
aligned. Pure: the caller passes the clock.
"""

from __future__ import annotations

from server.limits import TokenBucket

__all__ = ["DRIFT", "AudioMeter"]

DRIFT = 1.05  # the budget fills 5 % faster than real time: clocks differ a little


class AudioMeter:
    """``admit(frame_bytes, now)``: forward this frame, or drop it as over budget?"""

    __slots__ = (
        "_bucket",
        "_bytes_per_s",
        "burst_s",
        "dropped_bytes",
        "dropped_frames",
        "passed_bytes",
    )

    def __init__(self, sample_rate: int, burst_s: float, now: float) -> None:
        self.burst_s = burst_s
        self._bytes_per_s = sample_rate * 2  # 16-bit mono
        # Tokens are bytes of audio: whole numbers, so a frame fits exactly.
        self._bucket = TokenBucket(self._bytes_per_s * DRIFT, burst_s * self._bytes_per_s, now)
        self.passed_bytes = 0
        self.dropped_bytes = 0
        self.dropped_frames = 0

    def admit(self, frame_bytes: int, now: float) -> bool:
        if self._bucket.take(frame_bytes, now):
            self.passed_bytes += frame_bytes
            return True
        self.dropped_bytes += frame_bytes
        self.dropped_frames += 1
        return False

    def seconds(self, byte_count: int) -> float:
        return byte_count / self._bytes_per_s
