"""Two-stage barge-in: pause at the first sound of the caller, then resume or interrupt.

Stage 1: a VAD onset while the bot is speaking *pauses* the reply: no further audio is
sent, so the caller hears at most the playout lead already queued at the line.
Stage 2: within a bounded window the decider settles it:

- words that are only a backchannel ("hmm", "ok", "haan", "theek hai") -> RESUME, the
  reply goes on from where it paused, no ``killAudio``, no word lost;
- content words (``min_content_words`` of them in an interim, any in a final), or more
  than the classifier's ``max_words`` words -> INTERRUPT (``killAudio``, the turn is
  cancelled, the history keeps only what was heard);
- no words by the end of the window (``window_ms`` after the onset): still speaking ->
  INTERRUPT (sustained speech), quiet again -> RESUME (a cough, a click, line noise).

After a resume the utterance is still watched: content words that arrive late, or
backchannel-only speech running on for ``max_backchannel_ms``, interrupt after all; a new
onset pauses again. Words without any VAD onset (no VAD, or it missed the start) are
judged at once: content interrupts, a backchannel does nothing.

The decider is a small state machine on virtual time: every input carries its time and
:meth:`BargeInDecider.tick` must be called by :meth:`BargeInDecider.deadline`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.turntaking.words import BackchannelClassifier, WordsVerdict

__all__ = ["Action", "BargeInConfig", "BargeInDecider", "Decision", "Phase"]


class Action(enum.Enum):
    PAUSE = "pause"  # stop sending further reply audio
    RESUME = "resume"  # send again from where it paused
    INTERRUPT = "interrupt"  # killAudio + cancel the turn + truncate the history


class Phase(enum.Enum):
    IDLE = "idle"  # no reply audio: caller speech is an ordinary turn
    LISTENING = "listening"  # reply audio on its way, caller quiet
    PAUSED = "paused"  # caller sound over the reply: deciding
    OVERLAP = "overlap"  # resumed over a backchannel or noise; the utterance is still watched
    YIELDED = "yielded"  # interrupted: the caller has the floor until the next reply


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str  # for the log line and the tests: "onset", "backchannel", "content", ...


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    window_ms: int = 400  # longest pause without words before deciding
    max_backchannel_ms: int = 1200  # speech past this, even of backchannels, interrupts
    min_content_words: int = 1  # content words in an interim that interrupt

    def __post_init__(self) -> None:
        if not 50 <= self.window_ms <= 5000:
            raise ValueError(f"window_ms must be in [50, 5000], got {self.window_ms}")
        if self.max_backchannel_ms < self.window_ms:
            raise ValueError(
                f"max_backchannel_ms ({self.max_backchannel_ms}) must be >= window_ms "
                f"({self.window_ms})"
            )
        if self.min_content_words < 1:
            raise ValueError(f"min_content_words must be >= 1, got {self.min_content_words}")


class BargeInDecider:
    """One call's barge-in state. Inputs return a :class:`Decision` or None."""

    def __init__(self, config: BargeInConfig, classifier: BackchannelClassifier) -> None:
        self._config = config
        self._classifier = classifier
        self._window_s = config.window_ms / 1000
        self._max_backchannel_s = config.max_backchannel_ms / 1000
        self.phase = Phase.IDLE
        self._speaking = False  # the VAD's latest word on the caller
        self._run_start = 0.0  # start of the caller's current continuous speech
        self._onset_at = 0.0  # onset that opened the current pause
        self._verdict: WordsVerdict | None = None  # the current utterance's words
        self.pauses = 0
        self.resumes = 0
        self.interrupts = 0

    # -- inputs ----------------------------------------------------------------------------

    def bot_speaking(self, speaking: bool, at: float) -> Decision | None:
        """The reply's audio started (a turn began sending) or is over (played, killed)."""
        if not speaking:
            self.phase = Phase.IDLE
            return None
        if self.phase not in (Phase.IDLE, Phase.YIELDED):
            return None
        self.phase = Phase.LISTENING
        if self._speaking:  # the caller is already talking as the reply starts
            return self._pause(at, "caller speaking as the reply starts")
        return None

    def vad(self, speech: bool, at: float) -> Decision | None:
        """A VAD onset (``speech``) or offset of the caller's audio."""
        if speech == self._speaking:
            return None
        self._speaking = speech
        if not speech:
            return None
        self._run_start = at
        if self.phase in (Phase.LISTENING, Phase.OVERLAP):
            return self._pause(at, "onset")
        return None

    def words(self, text: str, at: float, *, final: bool = False) -> Decision | None:
        """The caller's words so far in this utterance (interim or final transcript)."""
        verdict = self._classifier.classify(text)
        if verdict.empty:
            return None
        self._verdict = verdict
        if self.phase in (Phase.IDLE, Phase.YIELDED):
            return None
        if self._interrupting(verdict, final=final):
            return self._interrupt("content words" if verdict.content_words else "many words")
        if self.phase is Phase.PAUSED and verdict.backchannel:
            return self._resume("backchannel")
        return None

    def utterance_end(self, at: float) -> Decision | None:
        """The STT says the caller's utterance is over (final endpoint or UtteranceEnd)."""
        self._verdict = None
        if self.phase is Phase.PAUSED:
            self.phase = Phase.LISTENING
            self.resumes += 1
            return Decision(Action.RESUME, "utterance over without content")
        if self.phase is Phase.OVERLAP:
            self.phase = Phase.LISTENING
        return None

    def tick(self, now: float) -> Decision | None:
        """Time has reached ``now``: close an expired window."""
        if self.phase is Phase.PAUSED and now >= self._onset_at + self._window_s:
            if self._speaking:
                return self._interrupt("speech without words past the window")
            return self._resume("no words: noise")
        if (
            self.phase is Phase.OVERLAP
            and self._speaking
            and now >= self._run_start + self._max_backchannel_s
        ):
            return self._interrupt("speaking too long for a backchannel")
        return None

    def deadline(self) -> float | None:
        """The next time :meth:`tick` can decide something (None: nothing pending)."""
        if self.phase is Phase.PAUSED:
            return self._onset_at + self._window_s
        if self.phase is Phase.OVERLAP and self._speaking:
            return self._run_start + self._max_backchannel_s
        return None

    # -- transitions --------------------------------------------------------------------------

    def _interrupting(self, verdict: WordsVerdict, *, final: bool) -> bool:
        needed = 1 if final else self._config.min_content_words
        return verdict.content_words >= needed or verdict.words > self._classifier.max_words

    def _pause(self, at: float, reason: str) -> Decision:
        verdict = self._verdict  # words of this utterance may already be known
        if verdict is not None and self._interrupting(verdict, final=False):
            return self._interrupt("content words")
        self.phase = Phase.PAUSED
        self._onset_at = at
        self.pauses += 1
        return Decision(Action.PAUSE, reason)

    def _resume(self, reason: str) -> Decision:
        self.phase = Phase.OVERLAP
        self.resumes += 1
        return Decision(Action.RESUME, reason)

    def _interrupt(self, reason: str) -> Decision:
        self.phase = Phase.YIELDED
        self.interrupts += 1
        return Decision(Action.INTERRUPT, reason)
