"""A jittered telephony line on virtual time: how a reply's audio plays at the caller's end.

The path is server -> network -> Stream Node. Each chunk leaves when the sender lets it
(paced by :class:`pipeline.turntaking.pacer.JitPacer`, or as soon as TTS made it), is
delayed by a random 0..``max_jitter_s`` (seeded, so every run is the same), never
overtakes the chunk before it (one TCP stream), and the node plays chunks back to back:
each starts once it has arrived and the previous one has ended. An *underrun* is a
chunk arriving after the previous one finished playing: the caller hears a gap inside
the reply.

Used by the pacer's tests and the benchmark; no asyncio, no sockets, no clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.turntaking.pacer import JitPacer

__all__ = ["LineReport", "Pause", "play_reply", "tts_ready_times"]

_EPS = 1e-9


def tts_ready_times(
    sentence_audio_s: Sequence[float],
    *,
    chunk_s: float,
    first_audio_s: float = 0.15,
    realtime_factor: float = 4.0,
    start: float = 0.0,
) -> list[float]:
    """When each chunk of a reply is ready: sentence by sentence, each TTS request
    starting when the previous one finished, ``first_audio_s`` to its first audio, then
    audio ``realtime_factor`` times faster than real time."""
    ready: list[float] = []
    t = start
    for audio_s in sentence_audio_s:
        chunks = max(1, round(audio_s / chunk_s))
        t += first_audio_s
        for i in range(chunks):
            ready.append(t + (i + 1) * chunk_s / realtime_factor)
        t = ready[-1]
    return ready


@dataclass(frozen=True, slots=True)
class Pause:
    """The sender is paused from ``at`` until ``until`` (a barge-in being decided)."""

    at: float
    until: float


@dataclass(slots=True)
class LineReport:
    """Per frame sent (a frame is one chunk, or several merged to start a dry line)."""

    sent_at: list[float] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    play_start: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)  # underruns inside the reply
    pause_gaps_s: list[float] = field(default_factory=list)  # silences a pause caused
    max_queued_s: float = 0.0  # most audio ever waiting at the node (incl. the arriving frame)

    @property
    def underruns(self) -> int:
        return len(self.gaps_s)

    @property
    def audio_s(self) -> float:
        return sum(self.duration_s)

    def queued_at(self, t: float) -> float:
        """Audio arrived at the node by ``t`` and not yet played at ``t``."""
        total = 0.0
        for arrived, start, length in zip(
            self.arrived_at, self.play_start, self.duration_s, strict=True
        ):
            if arrived <= t:
                total += max(0.0, min(length, start + length - t))
        return total


def play_reply(
    ready: Sequence[float],
    *,
    chunk_s: float,
    pacer: JitPacer | None,
    max_jitter_s: float,
    seed: int,
    pauses: Sequence[Pause] = (),
) -> LineReport:
    """Send a reply's chunks (ready at ``ready``) over a jittered line and play them.

    ``pacer=None`` sends each chunk the moment it is ready (no pacing). With a pacer, a
    frame to a dry line merges chunks up to the pacer's ``min_frame_s``. A gap before a
    frame that a pause held back counts as a pause gap, not an underrun.
    """
    rng = random.Random(seed)
    report = LineReport()
    now = 0.0
    last_arrival = float("-inf")
    last_end: float | None = None
    i = 0
    while i < len(ready):
        now = max(now, ready[i])
        now, held = _when_sendable(now, chunk_s, pacer, pauses)
        count = 1
        if pacer is not None:
            wanted = math.ceil(pacer.min_frame_s(now) / chunk_s - _EPS)
            count = max(1, min(len(ready) - i, wanted))
            if ready[i + count - 1] > now:  # wait until the whole first frame is made
                now, held_again = _when_sendable(ready[i + count - 1], chunk_s, pacer, pauses)
                held = held or held_again
        duration = count * chunk_s
        if pacer is not None:
            pacer.sent(now, duration)
        arrival = max(last_arrival, now + rng.uniform(0.0, max_jitter_s))
        start = arrival if last_end is None else max(arrival, last_end)
        if last_end is not None and arrival > last_end + _EPS:
            (report.pause_gaps_s if held else report.gaps_s).append(arrival - last_end)
        report.sent_at.append(now)
        report.duration_s.append(duration)
        report.arrived_at.append(arrival)
        report.play_start.append(start)
        report.max_queued_s = max(report.max_queued_s, start + duration - arrival)
        last_arrival, last_end = arrival, start + duration
        i += count
    return report


def _when_sendable(
    now: float, chunk_s: float, pacer: JitPacer | None, pauses: Sequence[Pause]
) -> tuple[float, bool]:
    """The first time >= ``now`` the chunk may go, and whether a pause held it."""
    held = False
    while True:
        pause = next((p for p in pauses if p.at <= now < p.until), None)
        if pause is not None:
            held = True
            if pacer is not None:
                pacer.pause()
            now = pause.until
            continue
        if pacer is None:
            return now, held
        pacer.resume()
        at = pacer.send_at(now, chunk_s)
        assert at is not None  # not paused
        nxt = next((p for p in pauses if now < p.at <= at), None)
        if nxt is not None:  # a pause starts while waiting for the lead: it wins
            now = nxt.at
            continue
        return at, held
