"""Outbound audio to the caller's line, paced just in time, and the clock of what the
caller has heard.

The line (:class:`pipeline.line.LinePort`) queues audio and plays it back to back, so the
audio playing *now* is known from what was sent and when: each chunk starts when the
previous one ends (or when it arrives, if the queue ran dry).

Reply audio is not sent as fast as the TTS makes it: it waits in this buffer (bounded,
so the TTS is never held up by the caller's ear) and goes out only a bounded lead ahead
of what the caller hears (:class:`~pipeline.turntaking.pacer.JitPacer`). A *hold*
(a barge-in being decided, a speculative reply not yet confirmed) stops the sending;
releasing it carries on from the next unsent chunk. :meth:`Playout.kill` clears the
line's queue (at most the lead) and drops the buffer; :meth:`Playout.discard` drops only
the buffer (a reply cancelled before the caller heard it).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from audio.chunker import PcmChunker, chunk_bytes
from config.logs import get_logger
from pipeline.line import LinePort
from pipeline.turntaking.pacer import JitPacer

log = get_logger("SESSION")

MAX_EXTRA_LEAD_S = 0.6  # the most a late sender widens the lead (a pause then hears more)
EXTRA_LEAD_DECAY = 0.99  # per frame sent on time: ~7 s back to the base lead at 100 ms


@dataclass(slots=True)
class SpokenSpan:
    """One sentence as sent: its text and when it plays at the caller."""

    text: str
    start: float = 0.0  # monotonic time its first sample plays
    end: float = 0.0  # monotonic time its last sample sent so far ends
    complete: bool = False  # all of its audio was sent
    audio_s: float = 0.0  # its audio queued so far, sent or not (0: unknown, use the sent)
    # End of each word (s from the span's first audio) when the TTS reports it; the list
    # grows as the audio comes. None: the heard part is estimated from the audio played.
    word_ends: list[float] | None = None

    def heard_fraction(self, at: float) -> float:
        if at >= self.end and self.complete:
            return 1.0
        if at <= self.start or self.end <= self.start:
            return 0.0
        played = (min(at, self.end) - self.start) / max(self.audio_s, self.end - self.start)
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
        if span.word_ends is not None:
            cut = bisect.bisect_right(span.word_ends, at - span.start)
        else:
            cut = int(len(span_words) * fraction)
        words.extend(span_words[:cut])
        break
    return " ".join(words)


@dataclass(slots=True)
class _Audio:
    pcm: bytes
    span: SpokenSpan | None
    seconds: float
    queued_at: float


@dataclass(slots=True)
class _SpanEnd:
    """Everything of ``span`` before this is queued: once sent, the span is complete."""

    span: SpokenSpan


class Playout:
    """Paces audio to the line; sends one thing at a time (audio, clear, transfer,
    hang-up never interleave). Owns one sender task: :meth:`aclose` ends it."""

    def __init__(
        self,
        line: LinePort,
        clock: Callable[[], float] = time.monotonic,
        *,
        lead_s: float = 0.4,
        start_s: float = 0.2,
        max_buffer_s: float = 60.0,
        start_wait_s: float = 0.25,
    ) -> None:
        self._line = line
        self._lock = asyncio.Lock()
        self.sample_rate = line.sample_rate
        self.chunk_bytes = chunk_bytes(line.sample_rate, line.chunk_ms)
        self._bytes_per_s = line.sample_rate * 2
        self._clock = clock
        self._pacer = JitPacer(lead_s, min(start_s, lead_s))
        self._max_buffer_s = max_buffer_s
        self._start_wait_s = start_wait_s  # longest wait to fill a dry line's first frame
        self._queue: deque[_Audio | _SpanEnd] = deque()
        self._queued_bytes = 0  # whole bytes: float seconds would never sum back to zero
        self._head_since = 0.0  # when the oldest queued audio was queued
        self._holds: set[str] = set()
        self._changed = asyncio.Event()  # audio queued, a hold released, a kill
        self._room = asyncio.Event()
        self._room.set()
        self._sender: asyncio.Task[None] | None = None
        self.on_start: Callable[[], None] | None = None  # called when audio starts after silence
        self._released_at = 0.0  # the last hold released (a dry line after it is no fault)
        self.late_events = 0  # times the line ran dry with audio waiting here
        self.chunks_sent = 0
        self.audio_ms_sent = 0.0

    def chunker(self) -> PcmChunker:
        return PcmChunker(self.chunk_bytes)

    @property
    def playing_until(self) -> float:
        """When the line runs dry, by what was sent so far (the buffer not counted)."""
        return self._pacer.playing_until

    @property
    def buffered_s(self) -> float:
        """Audio waiting here, not yet sent to the line."""
        return self._queued_bytes / self._bytes_per_s

    @property
    def held(self) -> bool:
        return bool(self._holds)

    def speaking(self) -> bool:
        """Audio is playing at the caller, or waiting here to be sent."""
        return self._queued_bytes > 0 or self._pacer.playing(self._clock())

    def remaining_s(self) -> float:
        """Audio still to be heard: queued at the line, plus waiting here."""
        return self._pacer.ahead(self._clock()) + self.buffered_s

    # -- audio in ------------------------------------------------------------------------

    async def send_pcm(self, pcm: bytes, span: SpokenSpan | None = None) -> None:
        """Queue one chunk for the line; waits only while the buffer is full."""
        if not pcm:
            return
        while self.buffered_s >= self._max_buffer_s:
            self._room.clear()
            await self._room.wait()
        seconds = len(pcm) / self._bytes_per_s
        starting = not self.speaking()
        if self._queued_bytes == 0:
            self._head_since = self._clock()
        self._queue.append(_Audio(pcm, span, seconds, self._clock()))
        self._queued_bytes += len(pcm)
        if span is not None:
            span.audio_s += seconds
        self._wake()
        if starting and self.on_start is not None:
            self.on_start()

    def end_span(self, span: SpokenSpan) -> None:
        """All of ``span``'s audio is queued; it is complete once the last of it is sent."""
        if not self._queue:
            span.complete = True
        else:
            self._queue.append(_SpanEnd(span))
            self._wake()

    # -- holds and stops -----------------------------------------------------------------

    def hold(self, reason: str) -> None:
        """Send nothing more until :meth:`release` (what the line has queued plays out)."""
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._released_at = self._clock()
        self._holds.discard(reason)
        self._changed.set()

    def discard(self) -> None:
        """Drop the audio not yet sent (the line keeps playing what it has)."""
        self._queue.clear()
        self._queued_bytes = 0
        self._room.set()
        self._changed.set()

    async def kill(self) -> None:
        """Stop the caller's playback, clear the line's queue and this buffer (barge-in)."""
        async with self._lock:
            self.discard()
            self._holds.clear()
            self._pacer.clear(self._clock())
            await self._line.clear()

    async def transfer(self, number: str) -> None:
        async with self._lock:
            await self._line.transfer(number)

    async def hang_up(self) -> None:
        async with self._lock:
            await self._line.hang_up()

    async def wait_played(self, limit_s: float) -> None:
        """Sleep until all audio has been sent and played out (at most ``limit_s``)."""
        deadline = self._clock() + limit_s
        while (remaining := self.remaining_s()) > 0:
            left = deadline - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(remaining, left))

    async def aclose(self) -> None:
        """End the sender task (the call is over); queued audio is dropped."""
        sender, self._sender = self._sender, None
        self.discard()
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()
            await asyncio.wait({sender})

    # -- the sender ------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop(), name="playout")

    async def _send_loop(self) -> None:
        while True:
            frame = await self._next_frame()
            async with self._lock:
                if not frame or frame[0] is not self._peek():
                    continue  # a kill or discard took them while we waited for the lock
                await self._send(frame)

    def _peek(self) -> _Audio | _SpanEnd | None:
        return self._queue[0] if self._queue else None

    async def _next_frame(self) -> list[_Audio]:
        """Wait until the next frame may go: audio queued, no hold, the lead allows it."""
        while True:
            self._changed.clear()
            head = self._peek()
            if isinstance(head, _SpanEnd):
                self._queue.popleft()
                head.span.complete = True
                continue
            wait: float | None = None  # None: until something changes
            if head is not None and not self._holds:
                now = self._clock()
                frame = self._gather(self._pacer.min_frame_s(now))
                seconds = sum(item.seconds for item in frame)
                due = self._pacer.send_at(now, seconds)
                assert due is not None  # the pacer is never paused: holds live here
                if self._short_start(frame, seconds, now):
                    due = max(due, self._head_since + self._start_wait_s)
                if due <= now:
                    return frame
                wait = due - now
            await self._wait_change(wait)

    def _gather(self, min_s: float) -> list[_Audio]:
        """The next frame: one chunk, or chunks up to ``min_s`` (stops at a span's end)."""
        frame: list[_Audio] = []
        seconds = 0.0
        for item in self._queue:
            if not isinstance(item, _Audio):
                break
            frame.append(item)
            seconds += item.seconds
            if seconds >= min_s - 1e-9:
                break
        return frame

    def _short_start(self, frame: list[_Audio], seconds: float, now: float) -> bool:
        """A dry line's first frame is short of ``start_s`` and more audio may follow soon."""
        wanted = self._pacer.min_frame_s(now)
        if seconds >= wanted - 1e-9:
            return False
        return len(frame) == len(self._queue)  # nothing after it yet, not even a span end

    async def _wait_change(self, wait_s: float | None) -> None:
        if wait_s is None:
            await self._changed.wait()
            return
        try:
            async with asyncio.timeout(wait_s):
                await self._changed.wait()
        except TimeoutError:
            pass

    async def _send(self, frame: list[_Audio]) -> None:
        pcm = b"".join(item.pcm for item in frame)
        now = self._clock()
        self._widen_if_late(frame[0], now)
        start, _ = self._pacer.sent(now, len(pcm) / self._bytes_per_s)
        for item in frame:
            self._queue.popleft()
            self._queued_bytes -= len(item.pcm)
            span = item.span
            if span is not None:
                if not span.start:
                    span.start = start
                span.end = start + item.seconds
            start += item.seconds
        if self.buffered_s < self._max_buffer_s:
            self._room.set()
        await self._line.play(pcm)
        self.chunks_sent += 1
        self.audio_ms_sent += len(pcm) / self._bytes_per_s * 1000

    @property
    def extra_lead_s(self) -> float:
        """Lead added after the sender ran late (0 on a healthy loop)."""
        return self._pacer.extra_s

    def _widen_if_late(self, head: _Audio, now: float) -> None:
        """The line ran dry while this audio waited here (not for a hold): the sender woke
        late, so keep more queued at the line for a while; the extra decays on time."""
        pacer = self._pacer
        dry = now - pacer.playing_until
        waited = head.queued_at < pacer.playing_until and self._released_at < pacer.playing_until
        if dry > 0 and pacer.playing_until > 0 and waited:
            self.late_events += 1
            pacer.extra_s = min(MAX_EXTRA_LEAD_S, max(pacer.extra_s, 2 * dry + 0.1))
            log.warning(
                "Playout ran %.0f ms late; lead raised to %.0f ms",
                dry * 1000,
                (pacer.lead_s + pacer.extra_s) * 1000,
            )
        else:
            pacer.extra_s *= EXTRA_LEAD_DECAY
