"""Outbound audio to the caller's line, and the clock of what the caller has heard.

The line (:class:`pipeline.line.LinePort`) queues audio and plays it back to back, so the
audio playing *now* is known from what was sent and when: each chunk starts when the
previous one ends (or when it arrives, if the queue ran dry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from audio.chunker import PcmChunker, chunk_bytes
from pipeline.line import LinePort


@dataclass(slots=True)
class SpokenSpan:
    """One sentence as sent: its text and when it plays at the caller."""

    text: str
    start: float = 0.0  # monotonic time its first sample plays
    end: float = 0.0  # monotonic time its last sample ends
    complete: bool = False  # all of its audio was sent

    def heard_fraction(self, at: float) -> float:
        if at >= self.end and self.complete:
            return 1.0
        if at <= self.start or self.end <= self.start:
            return 0.0
        played = (min(at, self.end) - self.start) / (self.end - self.start)
        return played if self.complete else played * 0.999


def heard_text(spans: list[SpokenSpan], at: float) -> str:
    """The words the caller heard by ``at``: whole sentences plus a cut-off one."""
    words: list[str] = []
    for span in spans:
        fraction = span.heard_fraction(at)
        if fraction <= 0.0:
            break
        span_words = span.text.split()
        if fraction >= 1.0:
            words.extend(span_words)
            continue
        cut = int(len(span_words) * fraction)
        words.extend(span_words[:cut])
        break
    return " ".join(words)


class Playout:
    """Sends to the line one at a time (audio, clear, transfer, hang-up never interleave)."""

    def __init__(self, line: LinePort, clock: Callable[[], float] = time.monotonic) -> None:
        self._line = line
        self._lock = asyncio.Lock()
        self.sample_rate = line.sample_rate
        self.chunk_bytes = chunk_bytes(line.sample_rate, line.chunk_ms)
        self._bytes_per_s = line.sample_rate * 2
        self._clock = clock
        self._playing_until = 0.0
        self.chunks_sent = 0
        self.audio_ms_sent = 0.0

    def chunker(self) -> PcmChunker:
        return PcmChunker(self.chunk_bytes)

    @property
    def playing_until(self) -> float:
        return self._playing_until

    def speaking(self) -> bool:
        return self._clock() < self._playing_until

    def remaining_s(self) -> float:
        return max(0.0, self._playing_until - self._clock())

    async def send_pcm(self, pcm: bytes, span: SpokenSpan | None = None) -> None:
        """Play one chunk and advance the playback clock."""
        if not pcm:
            return
        async with self._lock:
            now = self._clock()
            start = now if now > self._playing_until else self._playing_until
            duration = len(pcm) / self._bytes_per_s
            self._playing_until = start + duration
            if span is not None:
                if not span.start:
                    span.start = start
                span.end = self._playing_until
            await self._line.play(pcm)
            self.chunks_sent += 1
            self.audio_ms_sent += duration * 1000

    async def kill(self) -> None:
        """Stop the caller's playback and clear the line's queue (barge-in)."""
        async with self._lock:
            self._playing_until = self._clock()
            await self._line.clear()

    async def transfer(self, number: str) -> None:
        async with self._lock:
            await self._line.transfer(number)

    async def hang_up(self) -> None:
        async with self._lock:
            await self._line.hang_up()

    async def wait_played(self, limit_s: float) -> None:
        """Sleep until the queued audio has played out (at most ``limit_s``)."""
        remaining = self.remaining_s()
        if remaining > 0:
            await asyncio.sleep(min(remaining, limit_s))
