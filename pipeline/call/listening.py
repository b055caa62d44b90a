"""Listening: the caller's voice activity and words become turn-taking commands.

Pure, no tasks and no I/O. The call feeds :class:`Listening` the local VAD's onsets and
offsets, the speech-to-text events and what the reply is doing, on the call's clock, and
carries out the commands it gets back (:mod:`pipeline.turntaking.listener`):

- barge-in in two stages: a VAD onset over the bot *pauses* its audio; backchannels
  ("hmm", "haan", "ok") or noise *resume* it, content words or sustained speech
  *interrupt* it (``killAudio``, the reply cancelled, the history cut to what was heard);
- an utterance ends on ``speech_final`` or ``UtteranceEnd``; while the bot is silent a
  lone backchannel is an answer only after a question, else it is held for the next
  utterance (docs/turn-taking.md);
- a preemptive reply may start on a stable interim when the VAD says the caller stopped,
  kept if the final says the same.

Words of a reply the caller never heard (``carry``) go in front of the next reply's
text, so nothing they said is lost when they talk over a reply still being prepared.
"""

from __future__ import annotations

from config.logs import get_logger
from pipeline.providers.base import STTEvent, STTEventKind
from pipeline.turntaking.config import TurnTakingConfig
from pipeline.turntaking.listener import BotState, Command, TurnTaker

__all__ = ["BotState", "Listening"]

log = get_logger("SESSION")


class Listening:
    def __init__(self, config: TurnTakingConfig, *, started: float) -> None:
        self.turns = TurnTaker(config)
        self._end_lag_s = config.vad.end_ms / 1000  # the VAD calls an end this late
        self._carry = ""
        self._speculative_prefix = ""  # carried words a speculative reply took along
        self.caller_active_at = started  # last caller speech the VAD or recogniser reported
        self.onset_at: float | None = None  # the caller's latest speech onset (VAD)
        # Where the caller's speech stopped, by the VAD; None while they speak (or no VAD).
        self.speech_ended_at: float | None = None
        self.last_line = ""  # what the bot said last: a question makes a lone "yes" a turn

    # -- inputs ------------------------------------------------------------------------------

    def vad(self, speech: bool, at: float) -> list[Command]:
        self.caller_active_at = at
        if speech:
            self.onset_at = at
            self.speech_ended_at = None
        else:
            self.speech_ended_at = at - self._end_lag_s
        return self.turns.vad(speech, at)

    def hear(self, event: STTEvent, at: float) -> list[Command]:
        if event.text or event.kind is STTEventKind.SPEECH_STARTED:
            self.caller_active_at = at
        if event.kind is STTEventKind.RECONNECTED:
            log.info("Speech recognition reconnected; the call goes on")
        return self.turns.stt(event, at)

    def bot(self, state: BotState, at: float, *, line: str | None = None) -> list[Command]:
        if state is self.turns.bot:
            return []
        return self.turns.reply_state(state, at, line=line)

    def tick(self, now: float) -> list[Command]:
        return self.turns.tick(now)

    def deadline(self) -> float | None:
        return self.turns.deadline()

    def carry(self, text: str) -> None:
        """Words of a reply cancelled before the caller heard any of it: say them again."""
        self._carry = text

    def take_end_of_speech(self) -> float | None:
        """Where the utterance a reply answers stopped (VAD), once: a later reply to an
        utterance the VAD missed must not take this one's end for its own."""
        ended, self.speech_ended_at = self.speech_ended_at, None
        return ended

    def claim(self, text: str, *, speculative: bool = False) -> str:
        """The text a reply answers: any carried words, then ``text``."""
        prefix, self._carry = self._carry, ""
        if speculative:
            self._speculative_prefix = prefix  # the final gets it too, if it is kept
        return _join(prefix, text)

    def kept(self, final: str) -> str:
        """The final a kept speculative reply answers, with the words it carried."""
        prefix, self._speculative_prefix = self._speculative_prefix, ""
        return _join(prefix, final)

    def discarded(self) -> None:
        """A speculative reply was dropped: its carried words wait for the next reply."""
        if self._speculative_prefix:
            self._carry = _join(self._speculative_prefix, self._carry)
            self._speculative_prefix = ""


def _join(prefix: str, text: str) -> str:
    return f"{prefix} {text}".strip()
