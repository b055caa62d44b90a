"""Preemptive reply: start thinking on a stable interim before the STT's final arrives.

When the caller has gone quiet (the VAD says so) and the interim transcript has not
changed for ``quiet_ms``, the reply can start on that interim. When the utterance's final
transcript comes, it is compared with the interim (both normalised): the same words keep
the reply that is already on its way, other words discard it and the reply starts over.
The speculative reply must not be *heard* before it is kept: its audio is held back
(the playout stays paused) until :meth:`PreemptiveGuard.settle` says KEEP.

Guards: at most one speculative start per utterance, every start/keep/discard counted
for the call summary, and ``enabled=False`` turns it off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.turntaking.words import normalise

__all__ = ["PreemptiveConfig", "PreemptiveGuard", "Verdict"]


class Verdict(enum.Enum):
    KEEP = "keep"  # the final says what the interim said: the reply stands
    DISCARD = "discard"  # it does not: cancel the speculative reply, answer the final


@dataclass(frozen=True, slots=True)
class PreemptiveConfig:
    enabled: bool = True
    quiet_ms: int = 150  # VAD quiet and interim unchanged this long before speculating

    def __post_init__(self) -> None:
        if not 0 <= self.quiet_ms <= 5000:
            raise ValueError(f"quiet_ms must be in [0, 5000], got {self.quiet_ms}")


class PreemptiveGuard:
    """One call's speculation state, utterance by utterance."""

    def __init__(self, config: PreemptiveConfig) -> None:
        self._config = config
        self._quiet_s = config.quiet_ms / 1000
        self._text = ""  # the utterance's words so far
        self._changed_at = 0.0
        self._speaking = False
        self._quiet_since: float | None = None  # last VAD offset (None: no offset yet)
        self._speculated: str | None = None  # the text a reply was started on
        self._used = False  # one speculative start per utterance
        self._declined = ""  # normalised words judged not worth a reply (an "ok")
        self.started = 0
        self.kept = 0
        self.discarded = 0

    @property
    def pending(self) -> str | None:
        """The text of the speculative reply in flight, if any."""
        return self._speculated

    def transcript(self, text: str, at: float) -> None:
        """The caller's words so far in this utterance (finals so far + the interim)."""
        text = text.strip()
        if normalise(text) != normalise(self._text):
            self._changed_at = at
        self._text = text

    def vad(self, speech: bool, at: float) -> None:
        if speech != self._speaking:
            self._speaking = speech
            self._quiet_since = None if speech else at

    def candidate(self, now: float) -> str | None:
        """The interim to start a reply on now, if every condition holds (no state change)."""
        due = self.deadline()
        return self._text if due is not None and now >= due else None

    def deadline(self) -> float | None:
        """When :meth:`candidate` may turn non-None without another input."""
        if not self._config.enabled or self._used or self._speaking or not self._text:
            return None
        if normalise(self._text) == self._declined:
            return None
        stable_since = self._stable_since()
        return None if stable_since is None else stable_since + self._quiet_s

    def decline(self, text: str) -> None:
        """``text`` is not worth a reply (an acknowledgement): wait for other words."""
        self._declined = normalise(text)

    def begin(self, text: str) -> None:
        """A speculative reply was started on ``text`` (the utterance's one chance)."""
        self._speculated = text
        self._used = True
        self.started += 1

    def settle(self, final_text: str) -> Verdict | None:
        """The utterance ended with ``final_text``: keep or discard the speculation (None
        if there was none). Resets for the next utterance either way."""
        speculated = self._speculated
        self._reset()
        if speculated is None:
            return None
        if normalise(final_text) == normalise(speculated):
            self.kept += 1
            return Verdict.KEEP
        self.discarded += 1
        return Verdict.DISCARD

    def abandon(self) -> None:
        """The utterance was dropped (barge-in, hang-up): forget it, count a discard."""
        if self._speculated is not None:
            self.discarded += 1
        self._reset()

    def _stable_since(self) -> float | None:
        if self._quiet_since is None:
            return None
        return max(self._quiet_since, self._changed_at)

    def _reset(self) -> None:
        self._text = ""
        self._speculated = None
        self._used = False
        self._declined = ""
        self._quiet_since = None  # the next utterance needs an offset of its own
