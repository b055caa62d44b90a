"""What a caller's utterance is when the bot is silent: a turn, or an acknowledgement.

The rule (README "Turn-taking"):

1. Content words always make a turn.
2. Only backchannel words ("ok", "haan", "yes", "theek hai") make a turn when they are
   the whole answer to a question: the bot's last line ended with ``?``. "Yes" after
   "Shall I book it?" books it.
3. Otherwise they are an *acknowledgement*: the bot does not answer them, and they are
   not written to the history on their own. Their words are held and go in front of the
   caller's next utterance ("okay ... and the price?" reaches the model whole).
4. If the caller then says nothing more for ``hold_s``, the held acknowledgement becomes
   a turn after all, so a caller who says "okay" and waits is never left in silence
   (``hold_s = 0`` turns this off: an acknowledgement alone is never answered).

While the bot is *speaking*, backchannels are the barge-in decider's business
(:mod:`pipeline.turntaking.barge_in`): they never stop the reply.
"""

from __future__ import annotations

import enum

from pipeline.turntaking.words import BackchannelClassifier, asks_question

__all__ = ["SilentTurnRule", "UtteranceKind"]


class UtteranceKind(enum.Enum):
    TURN = "turn"  # answer it now
    HELD = "held"  # an acknowledgement: held for the next utterance (or the hold timer)
    EMPTY = "empty"  # no words at all


class SilentTurnRule:
    """Applies the rule above to one call's utterances; pure, time given by the caller."""

    __slots__ = ("_classifier", "_held", "_held_at", "_hold_s")

    def __init__(self, classifier: BackchannelClassifier, *, hold_s: float = 4.0) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s}")
        self._classifier = classifier
        self._hold_s = hold_s
        self._held: list[str] = []
        self._held_at: float | None = None

    @property
    def held_text(self) -> str:
        return " ".join(self._held)

    def on_utterance(self, text: str, *, bot_last_line: str, at: float) -> UtteranceKind:
        """Classify an utterance that ended while the bot was silent."""
        verdict = self._classifier.classify(text)
        if verdict.empty:
            return UtteranceKind.EMPTY
        if verdict.backchannel and not asks_question(bot_last_line):
            self._held.append(text.strip())
            self._held_at = at
            return UtteranceKind.HELD
        return UtteranceKind.TURN

    def take(self, text: str) -> str:
        """The text of a turn: any held acknowledgement, then ``text``; clears the hold."""
        combined = " ".join([*self._held, text.strip()]).strip()
        self.clear()
        return combined

    def hold_deadline(self) -> float | None:
        """When a held acknowledgement becomes a turn (None: nothing held, or never)."""
        if self._held_at is None or self._hold_s == 0:
            return None
        return self._held_at + self._hold_s

    def expired(self, now: float) -> str | None:
        """The held text if its hold has run out by ``now`` (then it is a turn), else None."""
        deadline = self.hold_deadline()
        if deadline is None or now < deadline:
            return None
        return self.take("")

    def caller_spoke(self, at: float) -> None:
        """The caller is speaking again: restart the hold from ``at``."""
        if self._held_at is not None:
            self._held_at = at

    def clear(self) -> None:
        self._held.clear()
        self._held_at = None
