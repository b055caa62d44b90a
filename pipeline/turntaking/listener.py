"""Turn-taking for one call: caller events in, commands out, on virtual time.

The listening side of a call feeds this with the local VAD's onsets/offsets, the STT's
events and the reply's state, and carries out what comes back:

- a barge-in :class:`~pipeline.turntaking.barge_in.Decision`: PAUSE / RESUME sending the
  reply's audio, or INTERRUPT it (``killAudio``, cancel the reply, truncate the history);
- :class:`StartReply`: answer ``text`` (``speculative``: on an interim, audio held back);
- :class:`KeepReply`: the speculative reply matched the final: let its audio go;
- :class:`CancelReply`: drop the reply being prepared (a speculation that missed, or
  a reply the caller talked over before hearing any of it).

It brings together the barge-in decider (bot speaking), the silent-turn rule (bot
silent), the preemptive guard and the backchannel classifier; see their modules for the
rules. It reads no clock: every input carries its time, and :meth:`TurnTaker.tick` must
run by :meth:`TurnTaker.deadline`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.providers.base import STTEvent, STTEventKind
from pipeline.turntaking.barge_in import Action, BargeInDecider, Decision
from pipeline.turntaking.config import TurnTakingConfig
from pipeline.turntaking.preemptive import PreemptiveGuard, Verdict
from pipeline.turntaking.silent import SilentTurnRule, UtteranceKind
from pipeline.turntaking.words import asks_question

__all__ = ["BotState", "CancelReply", "Command", "KeepReply", "StartReply", "TurnTaker"]


class BotState(enum.Enum):
    SILENT = "silent"  # no reply in progress
    PREPARING = "preparing"  # a reply is being made, none of it sent to the caller yet
    SPEAKING = "speaking"  # reply audio is going out (or paused by a barge-in)


@dataclass(frozen=True, slots=True)
class StartReply:
    text: str
    speculative: bool = False


@dataclass(frozen=True, slots=True)
class KeepReply:
    text: str  # the final transcript the speculative reply answers


@dataclass(frozen=True, slots=True)
class CancelReply:
    reason: str


Command = Decision | StartReply | KeepReply | CancelReply


class TurnTaker:
    def __init__(self, config: TurnTakingConfig) -> None:
        self._classifier = config.classifier()
        self._min_content = config.barge_in.min_content_words
        self.decider = BargeInDecider(config.barge_in, self._classifier)
        self.guard = PreemptiveGuard(config.preemptive)
        self.rule = SilentTurnRule(self._classifier, hold_s=config.backchannel_hold_s)
        self.bot = BotState.SILENT
        self._last_line = ""  # what the bot said last (does it ask a question?)
        self._finals: list[str] = []
        self._interim = ""
        self._speaking = False
        self._speculative_text: str | None = None  # the StartReply text of a speculation

    # -- the caller ----------------------------------------------------------------------

    @property
    def utterance_text(self) -> str:
        """The caller's words so far in the current utterance."""
        return " ".join([*self._finals, self._interim]).strip()

    def vad(self, speech: bool, at: float) -> list[Command]:
        self._speaking = speech
        self.guard.vad(speech, at)
        if speech:
            self.rule.caller_spoke(at)
        return self._decided(self.decider.vad(speech, at))

    def stt(self, event: STTEvent, at: float) -> list[Command]:
        kind = event.kind
        if kind is STTEventKind.INTERIM:
            self._interim = event.text
            return self._on_words(at, final=False)
        if kind is STTEventKind.FINAL:
            out: list[Command] = []
            if event.text:
                self._finals.append(event.text)
                self._interim = ""
                out = self._on_words(at, final=True)
            if event.speech_final:
                out += self._end_of_utterance(at)
            return out
        if kind is STTEventKind.UTTERANCE_END:
            return self._end_of_utterance(at)
        return []

    # -- the bot ---------------------------------------------------------------------------

    def reply_state(self, state: BotState, at: float, *, line: str | None = None) -> list[Command]:
        """The reply moved to ``state``; ``line``: the text it said (when it ends)."""
        previous, self.bot = self.bot, state
        if line:
            self._last_line = line
        if state is BotState.SPEAKING and previous is not BotState.SPEAKING:
            return self._decided(self.decider.bot_speaking(True, at))
        if state is not BotState.SPEAKING and previous is BotState.SPEAKING:
            self.decider.bot_speaking(False, at)
        if state is BotState.SILENT and self._speculative_text is not None:
            self._speculative_text = None  # the speculative reply failed or was cut short
            self.guard.abandon()
        return []

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Command]:
        out = self._decided(self.decider.tick(now))
        if self.bot is not BotState.SILENT or self._speaking:
            return out
        candidate = self.guard.candidate(now)
        if candidate is not None and not self._answerable(candidate):
            self.guard.decline(candidate)
        elif candidate is not None:
            self.guard.begin(candidate)
            text = " ".join([self.rule.held_text, candidate]).strip()
            self._speculative_text = text
            self.bot = BotState.PREPARING
            return [*out, StartReply(text, speculative=True)]
        held = self.rule.expired(now)
        if held:
            self.bot = BotState.PREPARING
            out.append(StartReply(held))
        return out

    def deadline(self) -> float | None:
        times = [self.decider.deadline()]
        if self.bot is BotState.SILENT and not self._speaking:
            times += [self.guard.deadline(), self.rule.hold_deadline()]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    # -- inside ------------------------------------------------------------------------------

    def _on_words(self, at: float, *, final: bool) -> list[Command]:
        text = self.utterance_text
        self.guard.transcript(text, at)
        self.rule.caller_spoke(at)
        if self.bot is BotState.SPEAKING:
            return self._decided(self.decider.words(text, at, final=final))
        if self.bot is BotState.PREPARING and self._speculative_text is None:
            verdict = self._classifier.classify(text)
            needed = 1 if final else self._min_content
            if verdict.content_words >= needed:
                # The caller is still talking: the reply was for half a sentence.
                self.bot = BotState.SILENT
                return [CancelReply("caller still speaking")]
        return []

    def _end_of_utterance(self, at: float) -> list[Command]:
        text = " ".join(self._finals).strip()
        self._finals.clear()
        self._interim = ""
        verdict = self.guard.settle(text)
        if self.bot is BotState.SPEAKING:
            return self._decided(self.decider.utterance_end(at))
        self.decider.utterance_end(at)
        if verdict is Verdict.KEEP:
            self.rule.clear()  # the held words went into the speculative reply
            self._speculative_text = None
            return [KeepReply(text)]
        out: list[Command] = []
        if verdict is Verdict.DISCARD:
            self._speculative_text = None
            self.bot = BotState.SILENT
            out.append(CancelReply("the final differs from the interim"))
        elif self.bot is BotState.PREPARING:
            return out  # a backchannel over a reply being prepared: it goes on
        kind = self.rule.on_utterance(text, bot_last_line=self._last_line, at=at)
        if kind is UtteranceKind.TURN:
            self.bot = BotState.PREPARING
            out.append(StartReply(self.rule.take(text)))
        return out

    def _answerable(self, text: str) -> bool:
        """Whether an interim is worth answering now (not an acknowledgement to hold)."""
        verdict = self._classifier.classify(text)
        if verdict.empty:
            return False
        return not verdict.backchannel or asks_question(self._last_line)

    def _decided(self, decision: Decision | None) -> list[Command]:
        if decision is None:
            return []
        if decision.action is Action.INTERRUPT:
            self.bot = BotState.SILENT  # the reply is cut off; the caller has the floor
            self.decider.bot_speaking(False, 0.0)
        return [decision]
