"""Listening: the caller's speech events become utterances, and barge-in is decided here.

Pure decisions, no tasks and no I/O: :meth:`Listening.hear` takes one speech-to-text
event and what the bot is doing, and says what the session should do about it.

Barge-in, in two steps:

- *arm*: a ``SpeechStarted`` while the bot is speaking marks the caller's speech onset.
  Noise alone goes no further: nothing is cut off on a sound without words.
- *fire*: an interim transcript with at least ``BARGE_IN_MIN_WORDS`` words (or any final
  words) while the bot is busy (speaking, or preparing a reply) interrupts it. The
  :class:`Interrupt` carries the onset, so the log shows onset-to-cut time.

An utterance ends on ``speech_final`` or ``UtteranceEnd``, whichever comes first; its
text is every final since the last one, preceded by the words of a reply the caller
never heard (``carry``), so nothing they said is lost when they talk over a reply that
was still being prepared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.logs import get_logger
from pipeline.providers.base import STTEvent, STTEventKind

log = get_logger("SESSION")


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Cut the bot off: the caller said ``words`` over it (speech began at ``onset``)."""

    words: str
    onset: float


@dataclass(frozen=True, slots=True)
class EndOfUtterance:
    """The caller finished a turn (``trigger`` says what ended it): take the utterance
    with :meth:`Listening.take_utterance` once any interrupt before it is done."""

    trigger: str


Decision = Interrupt | EndOfUtterance


class Listening:
    def __init__(self, *, min_words: int, clock: Callable[[], float], started: float) -> None:
        self._min_words = min_words
        self._clock = clock
        self._finals: list[str] = []
        self._carry = ""
        self.caller_active_at = started  # last caller speech the recogniser reported
        self.armed_at: float | None = None  # speech onset over the bot, not yet decided

    @property
    def armed(self) -> bool:
        return self.armed_at is not None

    def carry(self, text: str) -> None:
        """Words of a reply cancelled before the caller heard any of it: say them again."""
        self._carry = text

    def hear(self, event: STTEvent, *, bot_busy: bool, bot_speaking: bool) -> list[Decision]:
        """What to do about one recogniser event, in order (interrupt before answering)."""
        now = self._clock()
        kind = event.kind
        if event.text or kind is STTEventKind.SPEECH_STARTED:
            self.caller_active_at = now
        decisions: list[Decision] = []
        if kind is STTEventKind.INTERIM:
            if event.word_count >= self._min_words and bot_busy:
                decisions.append(self._fire(event.text, now))
        elif kind is STTEventKind.FINAL:
            if event.text:
                if bot_busy:
                    decisions.append(self._fire(event.text, now))
                self._finals.append(event.text)
            if event.speech_final:
                decisions.append(EndOfUtterance("speech_final"))
        elif kind is STTEventKind.UTTERANCE_END:
            decisions.append(EndOfUtterance("UtteranceEnd"))
        elif kind is STTEventKind.SPEECH_STARTED:
            if bot_speaking and self.armed_at is None:
                self.armed_at = now
                log.debug("Speech started while bot speaks: barge-in armed")
        elif kind is STTEventKind.RECONNECTED:
            log.info("Speech recognition reconnected; the call goes on")
        return decisions

    def _fire(self, words: str, now: float) -> Interrupt:
        onset = self.armed_at if self.armed_at is not None else now
        self.armed_at = None
        return Interrupt(words, onset)

    def take_utterance(self) -> str:
        """The caller's words since the last utterance (empty if none), and start afresh.

        Taken when the end is acted on, not when it is heard: an interrupt just before it
        may have handed back the words of a reply nobody heard (:meth:`carry`).
        """
        text = " ".join(self._finals).strip()
        self._finals.clear()
        self.armed_at = None
        if self._carry:
            text = f"{self._carry} {text}".strip()
            self._carry = ""
        return text
