"""Just-in-time playout: send reply audio only a bounded lead ahead of the caller's ear.

The line (Knowlarity's Stream Node) plays what it receives back to back, so what the
caller hears *now* follows from what was sent and when: each chunk starts when the one
before it ends, or when it is sent if the line had run dry. The pacer keeps that clock
and lets a chunk go only when, once sent, no more than ``lead`` seconds of audio would
be queued at the line. So at any moment little audio sits in the line's queue: a pause
stops the caller's audio within ``lead``, a resume carries on from the next unsent chunk
with nothing lost, and a kill clears at most ``lead`` of queued audio.

The lead must cover the line's delivery jitter (chunks can arrive late but must arrive
before the previous one has finished playing): with 100 ms chunks, a lead of L survives
jitter up to L - 100 ms. A chunk longer than the lead goes as soon as the line runs dry.

Starting from a dry line (a reply's first audio, or a resume after the queue ran out) is
the one moment the lead cannot help: the second chunk may be delayed more than the first
is long. So the first frame sent to a dry line carries at least ``start_s`` of audio
(:meth:`JitPacer.min_frame_s`); with ``start_s`` above the jitter, the next chunk is
there before it ends. It costs the time TTS needs to make ``start_s`` instead of one chunk.

A sender that wakes late (a loaded event loop) can still run the line dry: ``extra_s``
lets its owner widen the lead while that is happening.

Pure: every method takes ``now`` (seconds on the caller's monotonic clock).
"""

from __future__ import annotations

__all__ = ["JitPacer"]


class JitPacer:
    """The playback clock of one call's line, and when the next chunk may be sent."""

    __slots__ = ("_lead", "_playing_until", "_start", "extra_s", "paused")

    def __init__(self, lead_s: float, start_s: float = 0.0) -> None:
        if not 0 < lead_s <= 10.0:
            raise ValueError(f"lead_s must be in (0, 10], got {lead_s}")
        if not 0 <= start_s <= lead_s:
            raise ValueError(f"start_s must be in [0, lead_s], got {start_s}")
        self._lead = lead_s
        self._start = start_s
        self.extra_s = 0.0  # lead added while the sender runs late (a loaded event loop)
        self._playing_until = 0.0
        self.paused = False

    @property
    def lead_s(self) -> float:
        return self._lead

    @property
    def playing_until(self) -> float:
        """When the line runs dry, by what was sent so far."""
        return self._playing_until

    def ahead(self, now: float) -> float:
        """Seconds of audio queued at the line beyond ``now``."""
        return max(0.0, self._playing_until - now)

    def playing(self, now: float) -> bool:
        return now < self._playing_until

    def min_frame_s(self, now: float) -> float:
        """Least audio the next frame should carry: ``start_s`` to a dry line, else any."""
        return self._start if self._playing_until <= now else 0.0

    def send_at(self, now: float, duration_s: float) -> float | None:
        """Earliest time (>= ``now``) a chunk of ``duration_s`` may go; None while paused."""
        if self.paused:
            return None
        if self._playing_until <= now:
            return now
        room = self._lead + self.extra_s - duration_s
        return max(now, self._playing_until - max(room, 0.0))

    def sent(self, now: float, duration_s: float) -> tuple[float, float]:
        """Record a chunk sent at ``now``; returns when it starts and ends at the caller."""
        start = max(now, self._playing_until)
        self._playing_until = start + duration_s
        return start, self._playing_until

    def pause(self) -> None:
        """Send nothing more until :meth:`resume` (what is queued at the line plays out)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def clear(self, now: float) -> None:
        """The line's queue was cleared (``killAudio``): nothing plays after ``now``."""
        self._playing_until = min(self._playing_until, now)
        self.paused = False
