"""Where speech starts and ends, from a stream of per-window speech probabilities (pure).

A VAD model scores each short window of audio (silero: 32 ms) with the probability that it
holds speech. :class:`SpeechSegmenter` turns those scores into utterances:

- **start** once ``start_ms`` of consecutive windows score at least ``threshold`` (a cough
  or a click is shorter and never starts an utterance);
- **end** once ``end_ms`` of consecutive windows score below ``threshold - hysteresis``
  (short pauses between words stay inside the utterance);
- an utterance longer than ``max_utterance_ms`` is cut there and a new one starts at once,
  so a caller who never pauses still gets transcribed piece by piece.

Event times are stream positions in ms (window index x window length), measured from the
first window pushed: a start is dated where its speech began (``start_ms`` before it was
confirmed), an end where the speech stopped (``end_ms`` before the silence confirmed it).
No clock, no I/O: tested on synthetic probability sequences.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["SegmenterSettings", "SpeechEvent", "SpeechEventKind", "SpeechSegmenter"]


@dataclass(frozen=True, slots=True)
class SegmenterSettings:
    threshold: float = 0.5  # a window is speech at or above this probability
    hysteresis: float = 0.15  # ...and silence only below threshold - hysteresis
    start_ms: int = 160  # speech this long before an utterance starts
    end_ms: int = 500  # silence this long ends the utterance
    max_utterance_ms: int = 15_000  # longer speech is cut into utterances this long

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if not 0.0 <= self.hysteresis < self.threshold:
            raise ValueError(f"hysteresis must be in [0, threshold), got {self.hysteresis}")
        if self.start_ms <= 0 or self.end_ms <= 0:
            raise ValueError("start_ms and end_ms must be positive")
        if self.max_utterance_ms < self.start_ms:
            raise ValueError("max_utterance_ms must be at least start_ms")


class SpeechEventKind(enum.Enum):
    START = "start"
    END = "end"


@dataclass(frozen=True, slots=True)
class SpeechEvent:
    kind: SpeechEventKind
    at_ms: float  # stream position where the speech began (START) or stopped (END)
    confirmed_ms: float  # stream position of the window that confirmed it
    cut: bool = False  # END only: forced by max_utterance_ms, the caller is still talking


class SpeechSegmenter:
    """Feed one probability per window with :meth:`push`; it returns the events it confirms."""

    __slots__ = (
        "_end_windows",
        "_low",
        "_max_windows",
        "_run",
        "_settings",
        "_speech_start",
        "_start_windows",
        "_window",
        "speaking",
        "window_ms",
    )

    def __init__(self, window_ms: float, settings: SegmenterSettings | None = None) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        self._settings = settings or SegmenterSettings()
        self.window_ms = window_ms
        self._start_windows = max(1, math.ceil(self._settings.start_ms / window_ms))
        self._end_windows = max(1, math.ceil(self._settings.end_ms / window_ms))
        self._max_windows = max(1, math.ceil(self._settings.max_utterance_ms / window_ms))
        self._low = self._settings.threshold - self._settings.hysteresis
        self._window = 0  # index of the next window
        self._run = 0  # consecutive speech windows (idle) or silent windows (speaking)
        self._speech_start = 0  # window where the current utterance began
        self.speaking = False

    @property
    def settings(self) -> SegmenterSettings:
        return self._settings

    @property
    def position_ms(self) -> float:
        """Stream position after the last window pushed."""
        return self._window * self.window_ms

    @property
    def silence_ms(self) -> float:
        """While speaking: how long the caller has been quiet (0 while they talk)."""
        return self._run * self.window_ms if self.speaking else 0.0

    @property
    def silence_started_ms(self) -> float | None:
        """While speaking and quiet: where the quiet began (the end, if it lasts)."""
        if not self.speaking or self._run == 0:
            return None
        return (self._window - self._run) * self.window_ms

    def push(self, probability: float) -> list[SpeechEvent]:
        index = self._window
        self._window += 1
        if not self.speaking:
            self._run = self._run + 1 if probability >= self._settings.threshold else 0
            if self._run < self._start_windows:
                return []
            self.speaking = True
            self._speech_start = index + 1 - self._run
            self._run = 0
            return [self._event(SpeechEventKind.START, self._speech_start, index)]
        self._run = self._run + 1 if probability < self._low else 0
        if self._run >= self._end_windows:
            self.speaking = False
            end = index + 1 - self._run
            self._run = 0
            return [self._event(SpeechEventKind.END, end, index)]
        if index + 1 - self._speech_start >= self._max_windows:
            # Cut here and go straight on with a new utterance: the caller is still talking.
            end = index + 1 - self._run
            self._speech_start = end
            self._run = 0
            return [
                self._event(SpeechEventKind.END, end, index, cut=True),
                self._event(SpeechEventKind.START, end, index),
            ]
        return []

    def reset(self) -> None:
        """Forget any speech in progress (e.g. a new stream)."""
        self._window = 0
        self._run = 0
        self._speech_start = 0
        self.speaking = False

    def _event(
        self, kind: SpeechEventKind, window: int, confirmed: int, *, cut: bool = False
    ) -> SpeechEvent:
        return SpeechEvent(kind, window * self.window_ms, (confirmed + 1) * self.window_ms, cut)
