"""Carrying out turn-taking commands in a call: pause, resume, interrupt, start a reply,
keep or drop a preemptive one.

The decisions come from :class:`pipeline.call.listening.Listening` (pure); this is where
they touch the call: the playout's holds, ``killAudio``, the turn task and the history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.logs import get_logger
from pipeline.call.turn import Turn
from pipeline.playout import heard_text
from pipeline.turntaking.barge_in import Action, Decision
from pipeline.turntaking.listener import BotState, CancelReply, Command, KeepReply, StartReply

if TYPE_CHECKING:
    from pipeline.call.session import CallSession

log = get_logger("SESSION")
ws_log = get_logger("KNOWLARITY")


class TurnCommands:
    def __init__(self, session: CallSession) -> None:
        self._session = session
        self.speculative: Turn | None = None  # a preemptive reply waiting for its final

    def wake_at(self) -> float | None:
        """When listening must look again with no input: a window closing, the bot silent."""
        s = self._session
        times = [s.listening.deadline()]
        if s.playout.speaking() and not s.playout.held:  # when the bot falls silent
            times.append(s.playout.playing_until + s.playout.buffered_s)
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def bot_state(self) -> BotState:
        s = self._session
        if not s.status.takes_turns:
            return BotState.SILENT  # winding down: no barge-in, no new turns
        if self.speculative is not None:
            return BotState.PREPARING  # its audio is held back until the final confirms it
        if s.playout.speaking():
            return BotState.SPEAKING
        return BotState.PREPARING if s._turn_running() else BotState.SILENT

    def sync_bot(self, now: float) -> list[Command]:
        """Tell listening what the reply is doing now (it may answer with a pause)."""
        listening = self._session.listening
        return listening.bot(self.bot_state(), now, line=listening.last_line)

    async def apply(self, command: Command) -> None:
        if isinstance(command, Decision):
            await self._barge_in(command)
        elif isinstance(command, StartReply):
            await self._start_reply(command)
        elif isinstance(command, KeepReply):
            await self._keep_reply(command)
        elif isinstance(command, CancelReply):
            await self._drop_reply(command)

    async def _barge_in(self, decision: Decision) -> None:
        s = self._session
        if not s.status.takes_turns:
            return
        onset = s.listening.onset_at
        since = f"{(s._clock() - onset) * 1000:.0f}" if onset is not None else "-"
        if decision.action is Action.PAUSE:
            s.playout.hold("barge_in")
            log.info(
                "Barge-in? paused the reply (%s) | onset_to_pause_ms=%s", decision.reason, since
            )
        elif decision.action is Action.RESUME:
            s.playout.release("barge_in")
            log.info("Barge-in? no: resumed the reply (%s) | onset_ms=%s", decision.reason, since)
        else:
            await self._interrupt(decision.reason, since)

    async def _interrupt(self, reason: str, since: str) -> None:
        """Caller speech the bot must yield to: barge-in."""
        s = self._session
        words = s.listening.turns.utterance_text
        now = s._clock()
        if s.playout.speaking():
            # No chunk of this turn may follow the killAudio: hold the playout, and end the
            # turn with every task it started (its TTS feeder can still queue audio until
            # the turn's cancellation reaches it) before the kill lifts the hold.
            s.playout.hold("interrupt")
            await s._cancel_turn()
            await s.playout.kill()
            s.record.barge_ins += 1
            ws_log.info(
                'Barge-in | killAudio sent (%s) | onset_to_kill_ms=%s heard_words="%s"',
                reason,
                since,
                words[:60],
            )
            turn = s._speaker.audible_turn if s._speaker is not None else None
            heard = heard_text(turn.spans, now) if turn is not None else ""
            if turn is not None and turn.history_entry is not None:
                s.history.revise(turn.history_entry, heard)
                assert s._speaker is not None
                s._speaker.audible_turn = None
            s.listening.last_line = heard
            s.feed.barge_in(turn.number if turn is not None else 0, heard, words, now)
        elif s._turn_running():
            log.info(
                'Caller still speaking; reply cancelled before it was heard | "%s"', words[:60]
            )
            await s._cancel_turn()

    async def _start_reply(self, command: StartReply) -> None:
        s = self._session
        if not s.status.takes_turns or s._replier is None:
            return
        await s._cancel_turn()
        text = s.listening.claim(command.text, speculative=command.speculative)
        turn = Turn(text, started=s._clock(), end_of_speech_at=s.listening.take_end_of_speech())
        if command.speculative:
            turn.speculative = True
            self.speculative = turn
            s.playout.hold("speculative")
            log.info('Preemptive reply on the interim | text="%s"', command.text)
        else:
            s.record.turns += 1
            turn.number = s.record.turns
            log.info('End of utterance | text="%s"', command.text)
        s._start_turn(s._respond(turn))

    async def _keep_reply(self, command: KeepReply) -> None:
        s = self._session
        turn, self.speculative = self.speculative, None
        if turn is None or turn.discarded:  # the speculative reply is gone: answer afresh
            s.listening.discarded()
            await self._start_reply(StartReply(command.text))
            return
        turn.user_text = s.listening.kept(command.text)
        s.record.turns += 1
        turn.number = s.record.turns
        turn.kept.set()
        s.playout.release("speculative")
        log.info('Preemptive reply kept: the final matches | text="%s"', command.text)

    async def _drop_reply(self, command: CancelReply) -> None:
        s = self._session
        turn, self.speculative = self.speculative, None
        if turn is not None:
            turn.discarded = True
            s.listening.discarded()
            log.info("Preemptive reply discarded: %s", command.reason)
        else:
            words = s.listening.turns.utterance_text
            log.info('Reply cancelled (%s) | "%s"', command.reason, words[:60])
        await s._cancel_turn()
        s.playout.release("speculative")
