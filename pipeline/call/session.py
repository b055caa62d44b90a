"""One phone call, from the greeting to the hang-up: the call's tasks and its state.

The session is vendor-free and line-free: it sees the three provider interfaces
(:mod:`pipeline.providers.base`) and a :class:`~pipeline.line.LinePort`, and publishes
what happens into a :class:`~pipeline.events.CallEvents` sink. Its jobs live apart:
listening and barge-in decisions in :mod:`pipeline.call.listening` (pure, on
:mod:`pipeline.turntaking`), carried out by :mod:`pipeline.call.commands`; one reply in
:mod:`pipeline.call.reply`, paced to the line by :mod:`pipeline.playout`; the goodbye
and hand-off in :mod:`pipeline.call.ending`; the call's one state in
:mod:`pipeline.call.state`. This module owns the tasks: a reply (the *turn* task), the
STT reader and the listener (:mod:`pipeline.call.inbox`), the time watchdog and the
goodbye; every one (and the playout's sender) is cancelled and awaited at the hang-up.

Time comes from ``clock`` (default ``time.monotonic``); sleeps and deadlines use the
event loop's clock, so a test on a virtual-time loop passes ``loop.time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from audio.vad import SileroVadModel
from config.logs import get_logger
from pipeline.agent import TRANSFER_TOOL, AgentConfig
from pipeline.aio import cancel_and_wait
from pipeline.call.commands import TurnCommands
from pipeline.call.ending import (
    GOODBYE_PLAYOUT_S,
    UNAVAILABLE_PLAYOUT_S,
    CallLimits,
    Ending,
)
from pipeline.call.feed import CallFeed, Outcome
from pipeline.call.inbox import CallerVoice, Inbox
from pipeline.call.listening import Listening
from pipeline.call.providers import Providers
from pipeline.call.reply import Replier, Speaker
from pipeline.call.state import CallState, CallStatus
from pipeline.call.turn import Turn
from pipeline.call_record import CallRecord
from pipeline.events import CallEvents, EndReason, NullEvents
from pipeline.history import History
from pipeline.line import LinePort
from pipeline.playout import Playout, heard_text
from pipeline.providers.base import ProviderError, STTEvent, STTEventKind
from pipeline.turntaking.config import TurnTakingConfig

log = get_logger("SESSION")
ws_log = get_logger("KNOWLARITY")


class CallSession:
    def __init__(
        self,
        *,
        record: CallRecord,
        config: AgentConfig,
        providers: Providers,
        line: LinePort,
        events: CallEvents | None = None,
        language: str = "",
        clock: Callable[[], float] = time.monotonic,
        turn_taking: TurnTakingConfig | None = None,
        vad: SileroVadModel | None = None,
    ) -> None:
        self.record = record
        self._config = config
        self._providers = providers
        self._line = line
        self._rate = line.sample_rate
        self._language = language
        self._clock = clock
        self._started = clock()
        self.status = CallStatus()
        self.feed = CallFeed(events or NullEvents(), record, clock, self._started)
        taking = turn_taking or TurnTakingConfig.default(config.barge_in_min_words)
        self.playout = Playout(
            line,
            clock,
            lead_s=taking.playout_lead_ms / 1000,
            start_s=taking.playout_start_ms / 1000,
        )
        self._inbox = Inbox(clock)
        self._vad_model = vad
        self.voice = CallerVoice(self._inbox, self._rate, taking.vad)
        self.playout.on_start = self._inbox.nudge  # the bot starts speaking: listening looks
        self.history = History(config.system_prompt, config.max_history_messages)
        self.listening = Listening(taking, started=self._started)
        self.commands = TurnCommands(self)
        tts = providers.tts
        self._speaker = Speaker(self.playout, tts, providers.cache, clock) if tts else None
        self._replier = (
            Replier(
                speaker=self._speaker,
                llm=providers.llm,
                tools=config.tools,
                transfer_tool=TRANSFER_TOOL.name if config.transfer_number else None,
                deadline_s=config.turn_deadline_s,
                feed=self.feed,
                clock=clock,
                first_clause_chars=config.first_clause_chars,
            )
            if self._speaker is not None and providers.llm is not None
            else None
        )
        self._ending = Ending(
            status=self.status,
            playout=self.playout,
            speaker=self._speaker,
            record=record,
            transfer_number=config.transfer_number,
            feed=self.feed,
            clock=clock,
        )
        self._limits = CallLimits(config.silence_timeout_s, config.max_call_s)
        self._turn_task: asyncio.Task[None] | None = None
        self._end_task: asyncio.Task[None] | None = None
        self._failed_turns = 0  # consecutive turns that ended in the fallback line
        self.audio_bytes_in = 0

    @property
    def end_reason(self) -> str | None:
        return self.status.detail

    # -- public ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the call until the caller hangs up (the line's audio ends)."""
        self.feed.call_started(
            sample_rate=self._rate, language=self._language, providers=self._providers.names()
        )
        try:
            missing = self._providers.missing()
            if missing:
                await self._serve_unavailable(missing)
            else:
                await self._serve()
        finally:
            if self.status.state is not CallState.HUNG_UP:
                self.status.to(CallState.HUNG_UP)
            await self._cancel(self._end_task)
            await self._cancel_turn()
            self._log_summary()
            self.feed.call_ended(self.status.end_reason, self.status.detail or "caller hung up")

    async def end_call(
        self, reason: str, *, transfer: bool = False, kind: EndReason = "timeout"
    ) -> None:
        """Say the goodbye line, then ``disconnect`` (once; later calls wait for the first).

        With ``transfer`` and a TRANSFER_NUMBER set, the caller goes to a person instead.
        A call already handed back (transferred, disconnected, hung up) is left alone.
        """
        self._begin_end(reason, transfer=transfer, kind=kind)
        if self._end_task is not None:
            await asyncio.shield(self._end_task)

    def bot_busy(self) -> bool:
        """Speaking, or preparing a reply, in a call that still takes turns."""
        if not self.status.takes_turns:
            return False
        return self._turn_running() or self.playout.speaking()

    # -- the call -------------------------------------------------------------------------

    async def _serve(self) -> None:
        stt = self._providers.stt
        assert stt is not None
        self._start_turn(self._speak_greeting())
        if self._vad_model is not None:
            await self.voice.open(self._vad_model)
        async with stt.stream(self._rate) as stream:
            reader = asyncio.create_task(self._inbox.read_stt(stream), name="stt-events")
            listener = asyncio.create_task(self._listen(), name="listen")
            watchdog = asyncio.create_task(self._watch_time(), name="watchdog")
            try:
                async for pcm in self._line.audio():
                    self.audio_bytes_in += len(pcm)
                    stream.send_audio(pcm)
                    await self.voice.hear(pcm)
            finally:
                self.voice.close()
                self.status.to(CallState.HUNG_UP)
                for task in (watchdog, listener, reader, self._end_task):
                    await self._cancel(task)
                await self._cancel_turn()
                await self.playout.aclose()

    async def _serve_unavailable(self, missing: list[str]) -> None:
        """Keys are missing: apologise if we can speak at all, then hand back to the IVR."""
        log.error("Cannot run the agent: no %s provider configured", "/".join(missing))
        detail = f"no {'/'.join(missing)} provider configured"
        self._begin_end(detail, kind="error", line=self._config.unavailable_line, cut_in=False)
        async for _ in self._line.audio():
            pass

    async def _watch_time(self) -> None:
        """End calls that run too long, or where nobody has said anything for a while."""
        while True:
            now = self._clock()
            quiet_since = max(self.listening.caller_active_at, self.playout.playing_until)
            if self._turn_running() or self.playout.speaking():
                quiet_since = now  # a reply is being prepared, or still being sent
            reason = self._limits.reached(now, started=self._started, quiet_since=quiet_since)
            if reason is not None:
                await self.end_call(reason, kind="timeout")
                return
            due = self._limits.next_check(started=self._started, quiet_since=quiet_since)
            await asyncio.sleep(due - now + 0.01)

    def voice_activity(self, speech: bool) -> None:
        """The local VAD heard the caller start (``speech``) or stop speaking."""
        self._inbox.voice_activity(speech)

    async def _listen(self) -> None:
        """Turn-taking: the caller's events and the reply's state in, commands carried out."""
        while (item := await self._inbox.next(self.commands.wake_at())) is not None:
            now = self._clock()
            commands = self.commands.sync_bot(now)
            if isinstance(item, STTEvent):
                self.feed.caller_speech(item)
                if item.kind is STTEventKind.RECONNECTED:
                    self.feed.stream_reconnected(self._providers.names().get("stt", "stt"))
                commands += self.listening.hear(item, now)
            elif isinstance(item, bool):
                commands += self.listening.vad(item, now)
            commands += self.listening.tick(now)
            for command in commands:
                await self.commands.apply(command)
        await self._recogniser_stopped()

    async def _recogniser_stopped(self) -> None:
        if self.status.state is CallState.HUNG_UP:
            return
        log.error("Speech recognition stopped; ending the call")
        if self._turn_task is not None:
            await asyncio.wait({self._turn_task})  # let the current line finish
        if not self.status.takes_turns:
            return  # already being transferred or ended: one hand-off per call
        if self._config.transfer_number:
            # Nobody can hear the caller any more, but a person still can.
            self._start_turn(self._ending.hand_off(self._config.transfer_line))
        else:
            self._begin_end(
                "speech recognition stopped",
                kind="error",
                line=self._config.unavailable_line,
                cut_in=False,
            )

    # -- turns ------------------------------------------------------------------------------

    def _turn_running(self) -> bool:
        return self._turn_task is not None and not self._turn_task.done()

    def _start_turn(self, coro: Coroutine[Any, Any, None]) -> None:
        previous = self._turn_task
        if previous is not None and not previous.done():
            previous.cancel()
        self._turn_task = asyncio.create_task(coro, name="turn")
        self._turn_task.add_done_callback(lambda _: self._inbox.nudge())

    async def _cancel_turn(self) -> None:
        task, self._turn_task = self._turn_task, None
        running = task is not None and not task.done()
        await self._cancel(task)
        if running:
            self.playout.discard()  # its audio not yet sent must not play

    async def _cancel(self, task: asyncio.Task[None] | None) -> None:
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait(task)

    async def _speak_greeting(self) -> None:
        assert self._speaker is not None
        turn = Turn(user_text=None, started=self._clock())
        try:
            await self._speaker.say_line(self._config.greeting, turn)
            turn.completed = True
        except ProviderError as exc:
            log.error("Greeting failed: %s", exc)
        finally:
            self._settle(turn, greeting=True)
        if turn.first_audio_at is not None:
            ws_log.info(
                "Greeting sent | first_audio_ms=%.0f", (turn.first_audio_at - turn.started) * 1000
            )

    async def _respond(self, turn: Turn) -> None:
        assert turn.user_text is not None and self._replier is not None
        messages = self.history.messages(turn.user_text)
        unheard = False
        outcome: Outcome = "answered"
        try:
            if not await self._replier.respond(turn, messages):
                outcome = "failed"
                await self._apologise(turn)
            else:
                self._failed_turns = 0
            if turn.speculative:
                await turn.kept.wait()  # the final transcript decides; else it is cancelled
            turn.completed = True
        except asyncio.CancelledError:
            outcome = "interrupted"
            if not turn.heard:
                # Nothing was heard: fold these words into the caller's next utterance
                # (a discarded preemptive reply's words come again in the final).
                if not turn.discarded:
                    self.listening.carry(turn.user_text)
                unheard = True
                outcome = "unheard"
            raise
        finally:
            if not unheard:
                self.history.add("user", turn.user_text)
            self._settle(turn)
            self.feed.turn_timings(turn, outcome)
        if turn.first_audio_at is not None:
            latency_ms = (turn.first_audio_at - turn.started) * 1000
            self.record.turn_latencies_ms.append(round(latency_ms, 1))
            log.info("Turn %d | first_audio_ms=%.0f", self.record.turns, latency_ms)
        if turn.transfer_requested and self.status.takes_turns:
            await self._ending.hand_off(self._config.transfer_line)

    async def _apologise(self, turn: Turn) -> None:
        """The fallback line, or after too many failed turns in a row, goodbye."""
        assert self._speaker is not None
        self._failed_turns += 1
        if self._failed_turns >= self._config.max_failed_turns:
            self._begin_end(
                f"{self._failed_turns} failed turns in a row", transfer=True, kind="error"
            )
            return
        try:
            await self._speaker.say_line(self._config.fallback_line, turn)
        except ProviderError as exc:
            # The line was not cached and the TTS is down too: nothing can be said, so
            # hand the caller on (or hang up) rather than leave them in silence.
            log.error("Fallback line failed (%s); ending the call", exc)
            self._begin_end("the fallback line could not be spoken", transfer=True, kind="error")

    def _settle(self, turn: Turn, *, greeting: bool = False) -> None:
        """Write the reply to the history as heard so far (revised again on barge-in)."""
        text = turn.reply_text() if turn.completed else heard_text(turn.spans, self._clock())
        if text:
            turn.history_entry = self.history.add("assistant", text)
            self.listening.last_line = text
        if turn.spans:
            self.feed.agent_speech(turn, heard=text, greeting=greeting)

    # -- end ------------------------------------------------------------------------------

    def _begin_end(
        self,
        reason: str,
        *,
        transfer: bool = False,
        kind: EndReason = "timeout",
        line: str | None = None,
        cut_in: bool = True,
    ) -> None:
        """Start the last line without waiting for it (safe from inside a turn task).

        ``cut_in`` stops the bot's audio first (a timeout, a drain); without it the last
        line follows what is queued (the caller hears an answer out, then the apology).
        """
        if self._end_task is not None or not self.status.can(CallState.ENDING):
            return
        self.status.to(CallState.ENDING, reason=kind, detail=reason)
        log.info("Ending the call: %s", reason)
        text = self._config.goodbye_line if line is None else line
        self._end_task = asyncio.create_task(
            self._goodbye(text, hand_on=transfer, cut_in=cut_in), name="goodbye"
        )

    async def _goodbye(self, text: str, *, hand_on: bool, cut_in: bool) -> None:
        await self._cancel_turn()
        for hold in ("barge_in", "speculative"):  # the last line is never held back
            self.playout.release(hold)
        if cut_in and self.playout.speaking():
            await self.playout.kill()
        playout_s = GOODBYE_PLAYOUT_S if cut_in else UNAVAILABLE_PLAYOUT_S
        await self._ending.goodbye(text, hand_on=hand_on, playout_s=playout_s)

    def _log_summary(self) -> None:
        latencies = self.record.turn_latencies_ms
        duration = self._clock() - self._started
        decider, guard = self.listening.turns.decider, self.listening.turns.guard
        ws_log.info(
            "Call summary | duration_s=%.1f turns=%d barge_ins=%d audio_in_s=%.1f audio_out_s=%.1f "
            "turn_first_audio_ms=%s pauses=%d resumed=%d preemptive=%d kept=%d discarded=%d "
            "vad_windows=%d/%d%s",
            duration,
            self.record.turns,
            self.record.barge_ins,
            self.audio_bytes_in / (self._rate * 2),
            self.playout.audio_ms_sent / 1000,
            "[" + ",".join(f"{ms:.0f}" for ms in latencies) + "]",
            decider.pauses,
            decider.resumes,
            guard.started,
            guard.kept,
            guard.discarded,
            self.voice.scored,
            self.voice.windows,
            f" transferred_to={self.record.transferred_to}" if self.record.transferred_to else "",
        )
