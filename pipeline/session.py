"""One phone call: listen, think, speak, and let the caller interrupt.

The session is vendor-free: it sees the three provider interfaces and a ``send`` function
for outbound text frames, and it reads caller audio from an async iterator. Every task it
starts lives in the session's scope and is cancelled and awaited when the call ends.

Turn flow: a final transcript starts a *turn* task (LLM -> sentence splitter -> TTS ->
100 ms chunks). Caller words while bot audio is still playing (or while a reply is still
being prepared) cancel the turn; if audio was playing, one ``killAudio`` goes out and the
history keeps only the part of the reply the caller heard.

Provider faults: until the first audio of a turn goes out, a retryable failure is
retried with backoff inside ``turn_deadline_s``; after that (or on a fault that retrying
cannot fix) the cached fallback line plays. ``max_failed_turns`` fallback lines in a row
end the call: goodbye line, then ``transfer`` (if a number is set) or ``disconnect``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from config.logs import get_logger
from pipeline.agent import TRANSFER_TOOL, AgentConfig
from pipeline.aio import aclose, cancel_and_wait
from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallerSpeech,
    CallEvents,
    CallStarted,
    EndReason,
    NullEvents,
    ProviderIssue,
    TurnTimings,
)
from pipeline.history import History
from pipeline.playout import Playout, SendText, SpokenSpan, heard_text
from pipeline.providers.base import (
    LanguageModel,
    Message,
    ProviderError,
    SpeechToText,
    STTEvent,
    STTEventKind,
    STTStream,
    TextDelta,
    TextToSpeech,
    ToolCall,
)
from pipeline.sentences import SentenceSplitter
from pipeline.speech_cache import SpeechCache
from pipeline.turn import Turn, retry_delay
from server.protocol import disconnect, transfer
from server.registry import CallRecord

log = get_logger("SESSION")
llm_log = get_logger("OPENAI")
ws_log = get_logger("KNOWLARITY")


@dataclass(slots=True)
class Providers:
    stt: SpeechToText | None
    llm: LanguageModel | None
    tts: TextToSpeech | None
    cache: SpeechCache = field(default_factory=SpeechCache)

    def missing(self) -> list[str]:
        names = {"STT": self.stt, "LLM": self.llm, "TTS": self.tts}
        return [name for name, provider in names.items() if provider is None]


class CallSession:
    def __init__(
        self,
        *,
        record: CallRecord,
        config: AgentConfig,
        providers: Providers,
        send: SendText,
        sample_rate: int,
        events: CallEvents | None = None,
        language: str = "",
    ) -> None:
        self.record = record
        self._events: CallEvents = events or NullEvents()
        self._language = language
        self._config = config
        self._providers = providers
        self._rate = sample_rate
        self.playout = Playout(send, sample_rate, config.chunk_ms)
        self.history = History(config.system_prompt, config.max_history_messages)
        self._turn_task: asyncio.Task[None] | None = None
        self._audible_turn: Turn | None = None  # the turn whose audio was sent last
        self._finals: list[str] = []
        self._carry_text = ""  # words of a reply cancelled before the caller heard it
        self._armed = False
        self._handing_off = False
        self._ending = False
        self._started = time.monotonic()
        self._caller_active_at = self._started  # last caller speech seen by the STT
        self._end_task: asyncio.Task[None] | None = None
        self._failed_turns = 0  # consecutive turns that ended in the fallback line
        self.end_reason: str | None = None
        self._end_kind: EndReason = "caller_hangup"
        self.audio_bytes_in = 0

    # -- public ---------------------------------------------------------------------------

    async def run(self, audio: AsyncIterator[bytes]) -> None:
        """Serve the call until the caller's audio ends (hang-up)."""
        missing = self._providers.missing()
        self._publish_started()
        try:
            if missing:
                await self._serve_unavailable(audio, missing)
                return
            await self._serve(audio)
        finally:
            await self._cancel_turn()
            self._log_summary()
            self._publish_ended()

    async def end_call(
        self, reason: str, *, transfer: bool = False, kind: EndReason = "timeout"
    ) -> None:
        """Say the goodbye line, then ``disconnect`` (once; later calls wait for the first).

        With ``transfer`` and a TRANSFER_NUMBER set, the caller goes to a person instead.
        """
        self._begin_end(reason, transfer=transfer, kind=kind)
        assert self._end_task is not None
        await asyncio.shield(self._end_task)

    def _begin_end(
        self, reason: str, *, transfer: bool = False, kind: EndReason = "timeout"
    ) -> None:
        """Start the goodbye without waiting for it (safe from inside a turn task)."""
        if self._end_task is None:
            self.end_reason = reason
            self._end_kind = kind
            log.info("Ending the call: %s", reason)
            self._handing_off = True  # no new turns, no barge-in
            self._end_task = asyncio.create_task(self._goodbye(hand_on=transfer), name="goodbye")

    async def _goodbye(self, *, hand_on: bool) -> None:
        await self._cancel_turn()
        if self.playout.speaking():
            await self.playout.kill()
        if self._providers.tts is not None:
            turn = Turn(user_text=None, started=time.monotonic())
            try:
                await self._say_cached(self._config.goodbye_line, turn)
            except ProviderError as exc:
                log.error("Goodbye line failed: %s", exc)
            await self.playout.wait_played(limit_s=10.0)
        number = self._config.transfer_number if hand_on else None
        if number:
            await self.playout.send_control(transfer(number))
            self.record.transferred_to = number
            self._end_kind = "transfer"
            ws_log.info("transfer sent | destination=%s", number)
        else:
            await self.playout.send_control(disconnect())
            ws_log.info("disconnect sent")

    # -- call events ----------------------------------------------------------------------

    def _at_ms(self, at: float) -> float:
        return round((at - self._started) * 1000, 1)

    def _publish_started(self) -> None:
        names = {
            "stt": self._providers.stt,
            "llm": self._providers.llm,
            "tts": self._providers.tts,
        }
        record = self.record
        self._events.publish(
            CallStarted(
                call_id=record.call_id,
                sample_rate=self._rate,
                language=self._language,
                call_type=record.call_type,
                virtual_number=record.virtual_number,
                customer_number=record.customer_number,
                providers={k: p.name for k, p in names.items() if p is not None},
                started_at=record.started_at,
            )
        )

    def _publish_speech(self, event: STTEvent) -> None:
        phase: Literal["started", "interim", "final"]
        if event.kind is STTEventKind.SPEECH_STARTED:
            phase = "started"
        elif event.kind is STTEventKind.INTERIM and event.text:
            phase = "interim"
        elif event.kind is STTEventKind.FINAL and event.text:
            phase = "final"
        else:
            return
        self._events.publish(
            CallerSpeech(
                call_id=self.record.call_id,
                phase=phase,
                text=event.text,
                at_ms=self._at_ms(time.monotonic()),
            )
        )

    def _publish_timings(
        self, turn: Turn, outcome: Literal["answered", "interrupted", "failed", "unheard"]
    ) -> None:
        def rel(at: float | None) -> float | None:
            return None if at is None else self._at_ms(at)

        self._events.publish(
            TurnTimings(
                call_id=self.record.call_id,
                turn=turn.number,
                user_text=turn.user_text or "",
                stt_final_ms=rel(turn.started),
                llm_first_token_ms=rel(turn.llm_first_token_at),
                tts_first_audio_ms=rel(turn.tts_first_audio_at),
                first_audio_sent_ms=rel(turn.first_audio_at),
                outcome=outcome,
                at_ms=self._at_ms(time.monotonic()),
            )
        )

    def _publish_issue(self, exc: ProviderError, *, retried: bool) -> None:
        self._events.publish(
            ProviderIssue(
                call_id=self.record.call_id,
                provider=exc.provider,
                message=exc.message,
                retried=retried,
                at_ms=self._at_ms(time.monotonic()),
            )
        )

    def _publish_ended(self) -> None:
        now = time.monotonic()
        self._events.publish(
            CallEnded(
                call_id=self.record.call_id,
                reason=self._end_kind,
                detail=self.end_reason or "caller hung up",
                duration_s=round(now - self._started, 3),
                turns=self.record.turns,
                barge_ins=self.record.barge_ins,
                transferred_to=self.record.transferred_to,
                at_ms=self._at_ms(now),
            )
        )

    # -- the call -------------------------------------------------------------------------

    async def _serve(self, audio: AsyncIterator[bytes]) -> None:
        assert self._providers.stt is not None
        self._start_turn(self._speak_fixed(self._config.greeting, greeting=True))
        async with self._providers.stt.stream(self._rate) as stt:
            listener = asyncio.create_task(self._listen(stt), name="listen")
            watchdog = asyncio.create_task(self._watch_time(), name="watchdog")
            try:
                async for pcm in audio:
                    self.audio_bytes_in += len(pcm)
                    stt.send_audio(pcm)
            finally:
                self._ending = True
                for task in (watchdog, listener, self._end_task):
                    if task is not None:
                        await cancel_and_wait(task)
                await self._cancel_turn()

    async def _serve_unavailable(self, audio: AsyncIterator[bytes], missing: list[str]) -> None:
        """Keys are missing: apologise if we can speak at all, then hand back to the IVR."""
        log.error("Cannot run the agent: no %s provider configured", "/".join(missing))
        self.end_reason = f"no {'/'.join(missing)} provider configured"
        self._end_kind = "error"
        if self._providers.tts is not None:
            self._start_turn(self._speak_fixed(self._config.unavailable_line, end_call=True))
        else:
            await self.playout.send_control(disconnect())
        async for _ in audio:
            pass

    async def _watch_time(self) -> None:
        """End calls that run too long, or where nobody has said anything for a while."""
        config = self._config
        call_deadline = self._started + config.max_call_s
        while True:
            quiet_since = max(self._caller_active_at, self.playout.playing_until)
            if self._turn_task is not None and not self._turn_task.done():
                quiet_since = time.monotonic()  # a reply is being prepared
            silence_deadline = quiet_since + config.silence_timeout_s
            now = time.monotonic()
            if now >= call_deadline:
                await self.end_call(f"maximum call duration ({config.max_call_s:.0f} s) reached")
                return
            if now >= silence_deadline:
                await self.end_call(f"no speech for {config.silence_timeout_s:.0f} s")
                return
            await asyncio.sleep(min(call_deadline, silence_deadline) - now + 0.01)

    async def _listen(self, stt: STTStream) -> None:
        async for event in stt.events():
            await self._on_stt_event(event)
        if not self._ending:
            log.error("Speech recognition stopped; ending the call")
            if self._turn_task is not None:
                await asyncio.wait({self._turn_task})  # let the current line finish
            if self._handing_off:
                return  # already being transferred or ended: one hand-off per call
            if self._config.transfer_number:
                # Nobody can hear the caller any more, but a person still can.
                self._start_turn(self._hand_off())
            else:
                self._start_turn(self._speak_fixed(self._config.unavailable_line, end_call=True))

    async def _on_stt_event(self, event: STTEvent) -> None:
        kind = event.kind
        if event.text or kind is STTEventKind.SPEECH_STARTED:
            self._caller_active_at = time.monotonic()
        self._publish_speech(event)
        if kind is STTEventKind.INTERIM:
            if event.word_count >= self._config.barge_in_min_words and self._bot_busy():
                await self._interrupt(event.text)
        elif kind is STTEventKind.FINAL:
            if event.text:
                if self._bot_busy():
                    await self._interrupt(event.text)
                self._finals.append(event.text)
            if event.speech_final:
                await self._end_of_utterance("speech_final")
        elif kind is STTEventKind.UTTERANCE_END:
            await self._end_of_utterance("UtteranceEnd")
        elif kind is STTEventKind.SPEECH_STARTED:
            if self.playout.speaking() and not self._armed:
                self._armed = True
                log.debug("Speech started while bot speaks: barge-in armed")
        elif kind is STTEventKind.RECONNECTED:
            log.info("Speech recognition reconnected; the call goes on")

    def _bot_busy(self) -> bool:
        if self._handing_off:
            return False
        turn_running = self._turn_task is not None and not self._turn_task.done()
        return turn_running or self.playout.speaking()

    async def _end_of_utterance(self, trigger: str) -> None:
        text = " ".join(self._finals).strip()
        self._finals.clear()
        self._armed = False
        if self._carry_text:
            text = f"{self._carry_text} {text}".strip()
            self._carry_text = ""
        if not text or self._handing_off or self._ending:
            return
        log.info('End of utterance (%s) | text="%s"', trigger, text)
        await self._cancel_turn()
        self.record.turns += 1
        turn = Turn(user_text=text, started=time.monotonic(), number=self.record.turns)
        self._start_turn(self._respond(turn))

    async def _interrupt(self, words: str) -> None:
        """Caller words while the bot is busy: barge-in."""
        task = self._turn_task
        now = time.monotonic()
        if self.playout.speaking():
            if task is not None:
                task.cancel()  # before killAudio, so no chunk of this turn follows it
            await self.playout.kill()
            self.record.barge_ins += 1
            ws_log.info('Barge-in | killAudio sent | heard_words="%s"', words[:60])
            await self._cancel_turn()
            turn = self._audible_turn
            heard = heard_text(turn.spans, now) if turn is not None else ""
            if turn is not None and turn.history_entry is not None:
                self.history.revise(turn.history_entry, heard)
                self._audible_turn = None
            self._events.publish(
                BargeIn(
                    call_id=self.record.call_id,
                    turn=turn.number if turn is not None else 0,
                    heard_text=heard,
                    words=words,
                    at_ms=self._at_ms(now),
                )
            )
        elif task is not None and not task.done():
            log.info(
                'Caller still speaking; reply cancelled before it was heard | "%s"', words[:60]
            )
            await self._cancel_turn()

    # -- turns ------------------------------------------------------------------------------

    def _start_turn(self, coro: Coroutine[Any, Any, None]) -> None:
        previous = self._turn_task
        if previous is not None and not previous.done():
            previous.cancel()
        self._turn_task = asyncio.create_task(coro, name="turn")

    async def _cancel_turn(self) -> None:
        task, self._turn_task = self._turn_task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _speak_fixed(
        self, text: str, *, greeting: bool = False, end_call: bool = False
    ) -> None:
        turn = Turn(user_text=None, started=time.monotonic())
        try:
            await self._say_cached(text, turn)
            turn.completed = True
        except ProviderError as exc:
            # Not cached and the TTS failed: still hang up below rather than hold the line.
            log.error("Fixed line failed: %s", exc)
        finally:
            self._settle(turn)
        if greeting and turn.first_audio_at is not None:
            ws_log.info(
                "Greeting sent | first_audio_ms=%.0f", (turn.first_audio_at - turn.started) * 1000
            )
        if end_call:
            await self.playout.wait_played(limit_s=15.0)
            if self._end_kind == "caller_hangup":
                self._end_kind = "agent_disconnect"
            await self.playout.send_control(disconnect())
            ws_log.info("disconnect sent")

    async def _respond(self, turn: Turn) -> None:
        assert turn.user_text is not None
        messages = self.history.messages(turn.user_text)
        unheard = False
        outcome: Literal["answered", "interrupted", "failed", "unheard"] = "answered"
        try:
            await self._respond_with_retries(turn, messages)
            turn.completed = True
            if turn.failed:
                outcome = "failed"
        except asyncio.CancelledError:
            outcome = "interrupted"
            if not turn.spans:
                # Nothing was heard: fold these words into the caller's next utterance.
                self._carry_text = turn.user_text
                unheard = True
                outcome = "unheard"
            raise
        finally:
            if not unheard:
                self.history.add("user", turn.user_text)
            self._settle(turn)
            self._publish_timings(turn, outcome)
        if turn.first_audio_at is not None:
            latency_ms = (turn.first_audio_at - turn.started) * 1000
            self.record.turn_latencies_ms.append(round(latency_ms, 1))
            log.info("Turn %d | first_audio_ms=%.0f", self.record.turns, latency_ms)
        if turn.transfer_requested:
            await self._hand_off()

    async def _respond_with_retries(self, turn: Turn, messages: list[Message]) -> None:
        deadline = turn.started + self._config.turn_deadline_s
        attempt = 0
        while True:
            attempt += 1
            try:
                if await self._attempt(turn, messages, deadline):
                    self._failed_turns = 0
                    return
                log.error(
                    "No audio within the %.1f s turn deadline; apologising to the caller",
                    self._config.turn_deadline_s,
                )
            except ProviderError as exc:
                heard = turn.first_audio_at is not None
                delay = retry_delay(exc, attempt, heard=heard, now=time.monotonic(), end=deadline)
                self._publish_issue(exc, retried=delay is not None)
                if delay is not None:
                    log.warning("%s; retrying turn in %.0f ms", exc, delay * 1000)
                    await asyncio.sleep(delay)
                    continue
                log.error("%s; apologising to the caller", exc)
            except Exception:  # a bug here must not leave the caller in silence
                log.exception("Turn failed unexpectedly; apologising to the caller")
            await self._apologise(turn)
            return

    async def _attempt(self, turn: Turn, messages: list[Message], deadline: float) -> bool:
        """One try at the reply; False if no audio went out before the turn deadline."""
        loop = asyncio.get_running_loop()
        scope = asyncio.timeout_at(loop.time() + deadline - time.monotonic())
        turn.deadline_scope = scope  # _send_chunk disarms it with the first audio
        try:
            async with scope:
                await self._generate(turn, messages)
        except TimeoutError:
            if not scope.expired():
                raise
            return False
        finally:
            turn.deadline_scope = None
        return True

    async def _apologise(self, turn: Turn) -> None:
        """The fallback line, or after too many failed turns in a row, goodbye."""
        turn.transfer_requested = False
        turn.failed = True
        self._failed_turns += 1
        if self._failed_turns >= self._config.max_failed_turns:
            self._begin_end(
                f"{self._failed_turns} failed turns in a row", transfer=True, kind="error"
            )
            return
        try:
            await self._say_cached(self._config.fallback_line, turn)
        except ProviderError as exc:
            # The line was not cached and the TTS is down too: nothing can be said, so
            # hand the caller on (or hang up) rather than leave them in silence.
            log.error("Fallback line failed (%s); ending the call", exc)
            self._begin_end("the fallback line could not be spoken", transfer=True, kind="error")

    async def _generate(self, turn: Turn, messages: list[Message]) -> None:
        """LLM and TTS side by side: sentence N is spoken while N+1 is being written."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
        think = asyncio.create_task(self._think(turn, messages, sentences), name="think")
        voice = asyncio.create_task(self._voice(turn, sentences), name="voice")
        try:
            await asyncio.wait({think, voice}, return_when=asyncio.FIRST_EXCEPTION)
            for task in (think, voice):
                if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                    raise exc
        finally:
            for task in (think, voice):
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task})

    async def _think(
        self, turn: Turn, messages: list[Message], out: asyncio.Queue[str | None]
    ) -> None:
        llm = self._providers.llm
        assert llm is not None
        splitter = SentenceSplitter()
        stream = llm.stream(messages, self._config.tools)
        try:
            async for event in stream:
                if turn.llm_first_token_at is None:
                    turn.llm_first_token_at = time.monotonic()
                if isinstance(event, TextDelta):
                    for sentence in splitter.push(event.text):
                        llm_log.info('Sentence | text="%s"', sentence)
                        await out.put(sentence)
                elif isinstance(event, ToolCall):
                    self._on_tool_call(turn, event)
        finally:
            await aclose(stream)
        rest = splitter.flush()
        if rest:
            llm_log.info('Sentence | text="%s"', rest)
            await out.put(rest)
        await out.put(None)

    def _on_tool_call(self, turn: Turn, call: ToolCall) -> None:
        if call.name == TRANSFER_TOOL.name and self._config.transfer_number:
            turn.transfer_requested = True
        else:
            llm_log.warning("Ignoring unknown tool call %r", call.name)

    async def _voice(self, turn: Turn, sentences: asyncio.Queue[str | None]) -> None:
        tts = self._providers.tts
        assert tts is not None
        while (sentence := await sentences.get()) is not None:
            await self._say_stream(tts.synthesize(sentence, self._rate), SpokenSpan(sentence), turn)

    async def _say_cached(self, text: str, turn: Turn) -> None:
        tts = self._providers.tts
        assert tts is not None
        stream = self._providers.cache.stream(tts, text, self._rate)
        await self._say_stream(stream, SpokenSpan(text), turn)

    async def _say_stream(
        self, pcm_stream: AsyncIterator[bytes], span: SpokenSpan, turn: Turn
    ) -> None:
        chunker = self.playout.chunker()
        registered = False
        try:
            async for pcm in pcm_stream:
                if turn.tts_first_audio_at is None:
                    turn.tts_first_audio_at = time.monotonic()
                for chunk in chunker.push(pcm):
                    if not registered:
                        turn.spans.append(span)
                        registered = True
                    await self._send_chunk(chunk, span, turn)
        finally:
            await aclose(pcm_stream)
        tail = chunker.flush()
        if tail:
            if not registered:
                turn.spans.append(span)
            await self._send_chunk(tail, span, turn)
        span.complete = True

    async def _send_chunk(self, pcm: bytes, span: SpokenSpan, turn: Turn) -> None:
        if turn.deadline_scope is not None:
            turn.deadline_scope.reschedule(None)  # audio is here: the deadline is met
        await self.playout.send_pcm(pcm, span)
        if turn.first_audio_at is None:
            turn.first_audio_at = time.monotonic()
            self._audible_turn = turn

    def _settle(self, turn: Turn) -> None:
        """Write the reply to the history as heard so far (revised again on barge-in)."""
        text = turn.reply_text() if turn.completed else heard_text(turn.spans, time.monotonic())
        if text:
            turn.history_entry = self.history.add("assistant", text)
        if turn.spans:
            self._events.publish(
                AgentSpeech(
                    call_id=self.record.call_id,
                    turn=turn.number,
                    text=turn.reply_text(),
                    heard=text,
                    at_ms=self._at_ms(time.monotonic()),
                )
            )

    async def _hand_off(self) -> None:
        number = self._config.transfer_number
        assert number is not None
        self._handing_off = True
        turn = Turn(user_text=None, started=time.monotonic())
        try:
            await self._say_cached(self._config.transfer_line, turn)
        except ProviderError as exc:  # not cached and the TTS failed: transfer all the same
            log.error("Hand-off line failed: %s", exc)
        # Let the caller hear the hand-off line before the line is switched.
        await self.playout.wait_played(limit_s=10.0)
        await self.playout.send_control(transfer(number))
        self.record.transferred_to = number
        self.end_reason = self.end_reason or "transferred to a person"
        self._end_kind = "transfer"
        ws_log.info("transfer sent | destination=%s", number)

    # -- end ------------------------------------------------------------------------------

    def _log_summary(self) -> None:
        latencies = self.record.turn_latencies_ms
        duration = time.monotonic() - self._started
        ws_log.info(
            "Call summary | duration_s=%.1f turns=%d barge_ins=%d audio_in_s=%.1f audio_out_s=%.1f "
            "turn_first_audio_ms=%s%s",
            duration,
            self.record.turns,
            self.record.barge_ins,
            self.audio_bytes_in / (self._rate * 2),
            self.playout.audio_ms_sent / 1000,
            "[" + ",".join(f"{ms:.0f}" for ms in latencies) + "]",
            f" transferred_to={self.record.transferred_to}" if self.record.transferred_to else "",
        )
