"""The call core on virtual time: a whole CallSession on in-memory providers and line.

No sockets and no real clock: every test below runs a call of seconds or minutes of
virtual time in milliseconds, and asserts timings exactly (barge-in, heard-text
truncation, silence timeout, maximum call length, the failed-turn limit, hand-off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from audio.vad import SileroVadModel
from pipeline.agent import TRANSFER_TOOL, AgentConfig
from pipeline.call.providers import Providers
from pipeline.call.session import CallSession
from pipeline.call.state import CallState
from pipeline.call_record import CallRecord
from pipeline.events import BargeIn, CallEnded, CallEvent, TurnTimings
from pipeline.providers.base import ProviderError, ToolCall
from pipeline.speech_cache import SpeechCache
from pipeline.turntaking.config import TurnTakingConfig
from testkit.memory import MemoryLine, Outcome, ScriptedLLM, ScriptedSTT, ToneTTS
from testkit.virtual_time import run_virtual

GREETING = "Hi."
MS_PER_CHAR = 50.0  # ToneTTS: a 20-character sentence plays for exactly one second


@dataclass
class Rig:
    """One call on in-memory parts, driven from the test coroutine."""

    session: CallSession
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ToneTTS
    line: MemoryLine
    events: list[CallEvent] = field(default_factory=list)
    call: asyncio.Task[None] | None = None

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def until(self, probe: Callable[[], object], step: float = 0.01) -> None:
        """Let virtual time pass until ``probe`` holds (at most a virtual hour)."""
        async with asyncio.timeout(3600):
            while not probe():  # noqa: ASYNC110
                await asyncio.sleep(step)

    def held(self) -> bool:
        """The reply's audio is held back (a barge-in being decided)."""
        return self.session.playout.held

    async def quiet(self) -> None:
        """Until the bot has said everything it was going to say."""
        await self.until(lambda: not self.session.bot_busy())

    async def ask(self, text: str) -> None:
        """Say ``text`` as one utterance and wait until the bot has answered it."""
        turns = self.session.record.turns
        self.stt.say(text)
        await self.until(lambda: self.session.record.turns > turns)
        await self.quiet()

    async def hang_up(self) -> None:
        self.line.caller_hangs_up()
        assert self.call is not None
        await self.call

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def call(
    script: list[Outcome],
    body: Callable[[Rig], Awaitable[None]],
    turn_taking: TurnTakingConfig | None = None,
    vad: SileroVadModel | None = None,
    tts: ToneTTS | None = None,
    line_type: type[MemoryLine] = MemoryLine,
    llm_type: type[ScriptedLLM] = ScriptedLLM,
    **config: Any,
) -> None:
    """Run ``body`` against a fresh call on a virtual-time loop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        voice = tts or ToneTTS(ms_per_line=0.0, ms_per_char=MS_PER_CHAR)
        stt, llm = ScriptedSTT(), llm_type(script)
        line = line_type(16000, 100, clock=loop.time)
        rig_events: list[CallEvent] = []

        class Sink:
            def publish(self, event: CallEvent) -> None:
                rig_events.append(event)

        session = CallSession(
            record=CallRecord("call-virtual"),
            config=AgentConfig(greeting=GREETING, system_prompt="system", **config),
            # No cache: every line is synthesised, so the TTS sees the whole conversation.
            providers=Providers(stt=stt, llm=llm, tts=voice, cache=SpeechCache(max_entries=0)),
            line=line,
            events=Sink(),
            clock=loop.time,
            turn_taking=turn_taking,
            vad=vad,
        )
        rig = Rig(session, stt, llm, voice, line, rig_events)
        rig.call = asyncio.create_task(session.run())
        await rig.until(lambda: rig.line.actions and not session.bot_busy())  # greeting heard
        await body(rig)
        if not rig.call.done():
            await rig.hang_up()
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, leftover

    run_virtual(main())


LONG = "One two three four five six seven eight nine ten."  # 50 chars: 2.5 s of audio


def test_barge_in_pauses_on_speech_fires_on_words_and_keeps_only_what_was_heard() -> None:
    async def body(rig: Rig) -> None:
        rig.stt.say("Tell me everything.")
        await rig.until(lambda: rig.session.playout.speaking())
        started = rig.now  # the reply's first chunk plays from here (nothing was queued)
        await asyncio.sleep(1.0)
        rig.session.voice_activity(True)  # a sound: the reply pauses, nothing is cut
        await asyncio.sleep(0.2)
        assert rig.held() and rig.line.kinds()[-1] == "play"
        plays = rig.line.kinds().count("play")
        await asyncio.sleep(0.05)
        assert rig.line.kinds().count("play") == plays  # paused: nothing more was sent
        rig.stt.interim("wait")  # words: fire
        await rig.until(lambda: "clear" in rig.line.kinds())
        cut = rig.line.actions[-1].at
        assert cut == pytest.approx(started + 1.25, abs=0.01)
        assert rig.session.record.barge_ins == 1 and not rig.held()
        # 1.25 s of 2.5 s heard: half of the ten words.
        (barge,) = rig.of(BargeIn)
        assert barge.heard_text == "One two three four five"
        assert barge.words == "wait" and barge.turn == 1
        assert rig.session.history.turns[-1] == {
            "role": "assistant",
            "content": "One two three four five",
        }

    call([LONG], body)


def test_speech_without_words_never_cuts_the_bot_off() -> None:
    async def body(rig: Rig) -> None:
        rig.stt.say("Tell me everything.")
        await rig.until(lambda: rig.session.playout.speaking())
        rig.stt.speech_started()  # the recogniser's own VAD: no pause, no cut
        rig.session.voice_activity(True)  # a cough: paused...
        await asyncio.sleep(0.1)
        rig.session.voice_activity(False)
        await asyncio.sleep(0.1)
        assert rig.held()
        await asyncio.sleep(0.25)  # ...and resumed when the window closes without words
        assert not rig.held()
        await rig.quiet()
        assert "clear" not in rig.line.kinds() and rig.session.record.barge_ins == 0
        rig.stt.utterance_end()
        await asyncio.sleep(0.01)
        assert rig.session.history.turns[-1]["content"] == LONG

    call([LONG], body)


def test_caller_talking_over_a_reply_being_prepared_folds_into_one_question() -> None:
    async def body(rig: Rig) -> None:
        rig.tts.delay_s = 0.5  # the reply is slow to start
        rig.stt.say("What time")
        await asyncio.sleep(0.1)
        rig.stt.say("do you open?")  # before any audio: the first reply is dropped unheard
        await rig.quiet()
        assert rig.llm.requests[1][-1] == {"role": "user", "content": "What time do you open?"}
        assert [e.outcome for e in rig.of(TurnTimings)] == ["unheard", "answered"]
        assert "clear" not in rig.line.kinds()

    call(["Nine.", "We open at nine."], body)


def test_silence_timeout_says_goodbye_then_disconnects() -> None:
    async def body(rig: Rig) -> None:
        quiet_from = rig.now  # the greeting has just played out
        await rig.until(lambda: "hang_up" in rig.line.kinds())
        goodbye = rig.session._config.goodbye_line
        hang_up = rig.line.actions[-1]
        # Goodbye starts 30 s after the last sign of life, and is heard in full first.
        assert hang_up.at == pytest.approx(
            quiet_from + 30.0 + rig.tts.duration_ms(goodbye) / 1000, abs=0.05
        )
        assert rig.tts.texts[-1] == goodbye
        assert rig.session.status.state is CallState.DISCONNECTED
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert (ended.reason, ended.detail) == ("timeout", "no speech for 30 s")

    call([], body, silence_timeout_s=30.0)


def test_maximum_call_length_ends_a_lively_call() -> None:
    async def body(rig: Rig) -> None:
        start = rig.session.feed.started
        for _ in range(20):
            if "hang_up" in rig.line.kinds():
                break
            rig.stt.say("And then?")
            await asyncio.sleep(10.0)
        assert "hang_up" in rig.line.kinds()
        hung_up_at = next(a.at for a in rig.line.actions if a.kind == "hang_up")
        goodbye_s = rig.tts.duration_ms(rig.session._config.goodbye_line) / 1000
        # The limit cuts the bot off at 60 s; the goodbye is heard in full, then disconnect.
        assert hung_up_at == pytest.approx(start + 60.0 + goodbye_s, abs=0.05)
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert ended.reason == "timeout" and ended.detail == "maximum call duration (60 s) reached"

    call(["Sure."] * 20, body, max_call_s=60.0, silence_timeout_s=30.0)


def test_failed_turn_limit_counts_in_a_row_then_hands_the_caller_on() -> None:
    refused = ProviderError("memory", "HTTP 401", retryable=False, status=401)

    async def body(rig: Rig) -> None:
        config = rig.session._config
        for n in range(4):
            await rig.ask(f"words {n}")
        await rig.until(lambda: "transfer" in rig.line.kinds())
        assert rig.tts.texts == [
            GREETING,
            config.fallback_line,
            "Fine.",
            config.fallback_line,
            config.goodbye_line,
        ]
        assert [e.outcome for e in rig.of(TurnTimings)] == [
            "failed",
            "answered",
            "failed",
            "failed",
        ]
        assert rig.line.actions[-1].number == "+919000000001"
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert ended.reason == "transfer" and ended.detail == "2 failed turns in a row"

    call(
        [refused, "Fine.", refused, refused],
        body,
        max_failed_turns=2,
        transfer_number="+919000000001",
    )


def test_failed_turn_limit_without_a_number_disconnects_as_an_error() -> None:
    refused = ProviderError("memory", "HTTP 401", retryable=False, status=401)

    async def body(rig: Rig) -> None:
        rig.stt.say("hello")
        await rig.until(lambda: "hang_up" in rig.line.kinds())
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert ended.reason == "error"

    call([refused], body, max_failed_turns=1)


def test_a_retryable_fault_is_retried_inside_the_turn_deadline() -> None:
    busy = ProviderError("memory", "HTTP 503", retryable=True, status=503, retry_after_s=1.0)

    async def body(rig: Rig) -> None:
        asked = rig.now
        rig.stt.say("hello")
        await rig.until(lambda: len(rig.line.actions) > 1 and rig.session.playout.speaking())
        # The server asked for 1 s; the retry waited for it, then spoke at once.
        assert rig.now - asked == pytest.approx(1.0, abs=0.02)
        await rig.quiet()
        assert rig.tts.texts[-1] == "Back again."

    call([busy, "Back again."], body)


def test_hand_off_plays_the_line_in_full_then_transfers_and_takes_no_more_turns() -> None:
    async def body(rig: Rig) -> None:
        config = rig.session._config
        rig.stt.say("A person, please.")
        await rig.until(lambda: "transfer" in rig.line.kinds())
        transfer = rig.line.actions[-1]
        # The hand-off line is heard to its end, then the line is switched.
        assert transfer.at == pytest.approx(rig.session.playout.playing_until, abs=0.01)
        assert rig.tts.texts[-1] == config.transfer_line
        assert rig.session.status.state is CallState.TRANSFERRED
        rig.stt.say("Hello?")  # nobody answers any more
        await asyncio.sleep(5)
        assert rig.llm.calls == 1 and not rig.session.bot_busy()
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert (ended.reason, ended.transferred_to) == ("transfer", "+919000000002")

    call(
        [ToolCall(TRANSFER_TOOL.name)],
        body,
        transfer_number="+919000000002",
    )


def test_drain_during_the_call_says_goodbye_once() -> None:
    async def body(rig: Rig) -> None:
        ends = [
            asyncio.create_task(
                rig.session.end_call("server shutting down", kind="agent_disconnect")
            )
            for _ in range(2)
        ]
        await asyncio.gather(*ends)
        assert rig.tts.texts.count(rig.session._config.goodbye_line) == 1
        assert rig.line.kinds()[-1] == "hang_up"
        await rig.session.end_call("again")  # handed back already: nothing more
        assert rig.line.kinds().count("hang_up") == 1
        await rig.hang_up()
        (ended,) = rig.of(CallEnded)
        assert ended.reason == "agent_disconnect"

    call([], body)
