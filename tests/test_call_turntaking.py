"""Turn-taking in a whole call on virtual time: the VAD and the recogniser drive the
session, and the line shows what the caller heard (in-memory providers, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from pipeline.events import BargeIn, TurnTimings
from pipeline.providers.base import LLMEvent, Message, ToolSpec
from pipeline.turntaking.config import TurnTakingConfig
from pipeline.turntaking.preemptive import PreemptiveConfig
from testkit.memory import ScriptedLLM, ToneTTS
from tests.test_call_core import GREETING, LONG, Rig, call

SPECULATIVE = TurnTakingConfig(preemptive=PreemptiveConfig(enabled=True, quiet_ms=150))
NO_SPECULATION = TurnTakingConfig(preemptive=PreemptiveConfig(enabled=False))


async def speak(rig: Rig, words: str, seconds: float) -> None:
    """The caller says ``words`` over ``seconds``: VAD onset, interims, VAD offset."""
    rig.session.voice_activity(True)
    said = words.split()
    for i in range(1, len(said) + 1):
        await asyncio.sleep(seconds / len(said))
        rig.stt.interim(" ".join(said[:i]))
    rig.session.voice_activity(False)


def test_a_backchannel_over_the_reply_pauses_it_and_it_plays_on_to_the_end() -> None:
    async def body(rig: Rig) -> None:
        plays = len(rig.line.actions)
        rig.stt.say("Tell me everything.")
        await rig.until(lambda: len(rig.line.actions) > plays)
        started = rig.line.actions[plays].at  # the reply's first frame
        await asyncio.sleep(started + 1.0 - rig.now)
        await speak(rig, "haan ji", 0.3)  # pause at 1.0, words at 1.15: resume
        await asyncio.sleep(0.4)
        rig.stt.say("haan ji")  # the final: a backchannel, not a turn
        await rig.quiet()
        assert "clear" not in rig.line.kinds()
        long_ms = rig.tts.duration_ms(LONG)
        assert rig.line.played_ms(since=started) == pytest.approx(long_ms)  # all of it
        # The pause was shorter than the lead: the caller heard no gap at all.
        assert rig.now == pytest.approx(started + long_ms / 1000, abs=0.02)
        assert rig.session.record.turns == 1 and rig.llm.calls == 1
        assert rig.session.history.turns[-1] == {"role": "assistant", "content": LONG}
        decider = rig.session.listening.turns.decider
        assert (decider.pauses, decider.resumes, decider.interrupts) == (1, 1, 0)

    call([LONG], body, turn_taking=NO_SPECULATION)


def test_sustained_speech_without_words_interrupts_at_the_end_of_the_window() -> None:
    async def body(rig: Rig) -> None:
        rig.stt.say("Tell me everything.")
        await rig.until(lambda: rig.session.playout.speaking())
        started = rig.now
        await asyncio.sleep(1.0)
        rig.session.voice_activity(True)  # speech the recogniser has no words for yet
        await rig.until(lambda: "clear" in rig.line.kinds())
        assert rig.line.actions[-1].at == pytest.approx(started + 1.4, abs=0.01)
        (barge,) = rig.of(BargeIn)
        assert barge.heard_text == "One two three four five"  # 1.4 s of 2.5 s: 5.6 words

    call([LONG], body, turn_taking=NO_SPECULATION)


class SlowCloseLLM(ScriptedLLM):
    """An LLM whose response stream takes a while to close (an HTTP stream winding down)."""

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        try:
            async for event in super().stream(messages, tools):
                yield event
        finally:
            await asyncio.sleep(0.5)


def test_no_audio_of_an_interrupted_reply_follows_its_kill() -> None:
    """While the interrupted reply winds down (its LLM stream closing), its TTS goes on
    rendering sentences (one every 0.3 s): none of them may reach the line after the
    killAudio."""
    sentences = " ".join(f"Sentence number {n}." for n in range(1, 31))

    async def body(rig: Rig) -> None:
        rig.stt.say("Tell me everything.")
        await rig.until(lambda: rig.session.playout.speaking())
        await asyncio.sleep(1.0)
        rig.session.voice_activity(True)  # sustained speech: interrupted after the window
        await rig.until(lambda: "clear" in rig.line.kinds())
        await asyncio.sleep(3.0)
        kinds = rig.line.kinds()
        assert "play" not in kinds[kinds.index("clear") :], kinds
        assert len(rig.of(BargeIn)) == 1

    voice = ToneTTS(ms_per_line=0.0, delay_s=0.3, ms_per_char=50.0)
    call([sentences], body, turn_taking=NO_SPECULATION, tts=voice, llm_type=SlowCloseLLM)


def test_an_ok_after_a_statement_is_held_and_said_with_the_next_question() -> None:
    async def body(rig: Rig) -> None:
        await rig.ask("Book it.")  # the bot answers a statement: "Done."
        rig.stt.say("Okay.")
        await asyncio.sleep(1.0)
        assert rig.llm.calls == 1  # no reply to a lone acknowledgement
        rig.stt.say("And the price?")
        await rig.until(lambda: rig.llm.calls == 2)
        await rig.quiet()
        assert rig.llm.requests[1][-1] == {"role": "user", "content": "Okay. And the price?"}

    call(["Done.", "Ten rupees."], body, turn_taking=NO_SPECULATION)


def test_yes_after_a_question_is_answered() -> None:
    async def body(rig: Rig) -> None:
        await rig.ask("A table for two.")  # the bot asks: "Shall I book it?"
        rig.stt.say("Yes.")
        await rig.until(lambda: rig.llm.calls == 2)
        assert rig.llm.requests[1][-1] == {"role": "user", "content": "Yes."}

    call(["Shall I book it?", "Booked."], body, turn_taking=NO_SPECULATION)


def test_a_preemptive_reply_is_held_until_the_final_matches_then_plays() -> None:
    async def body(rig: Rig) -> None:
        plays = len(rig.line.actions)
        await speak(rig, "What time do you open", 1.0)
        quiet_at = rig.now
        await rig.until(lambda: rig.llm.calls == 1)
        assert rig.now == pytest.approx(quiet_at + 0.15, abs=0.02)  # stable and quiet
        await asyncio.sleep(0.4)  # the reply is made, but held back
        assert len(rig.line.actions) == plays
        rig.stt.say("What time do you open?")  # the final: the same words
        await rig.until(lambda: len(rig.line.actions) > plays)
        assert rig.now == pytest.approx(quiet_at + 0.55, abs=0.02)  # at once, no new request
        await rig.quiet()
        assert rig.llm.calls == 1 and rig.session.record.turns == 1
        history = rig.session.history.turns
        assert history[-2:] == [
            {"role": "user", "content": "What time do you open?"},
            {"role": "assistant", "content": "We open at nine."},
        ]
        guard = rig.session.listening.turns.guard
        assert (guard.started, guard.kept, guard.discarded) == (1, 1, 0)

    call(["We open at nine."], body, turn_taking=SPECULATIVE)


def test_a_preemptive_reply_the_final_contradicts_is_never_heard() -> None:
    async def body(rig: Rig) -> None:
        plays = len(rig.line.actions)
        await speak(rig, "What time do you", 1.0)
        await rig.until(lambda: rig.llm.calls == 1)
        await asyncio.sleep(0.3)
        rig.stt.say("What time do you close?")
        await rig.until(lambda: rig.llm.calls == 2)
        await rig.quiet()
        assert rig.tts.texts[-1] == "We close at six."
        heard = rig.line.played_ms(since=rig.line.actions[plays].at)
        assert heard == pytest.approx(rig.tts.duration_ms("We close at six."))
        assert rig.llm.requests[1][-1] == {"role": "user", "content": "What time do you close?"}
        assert [e.outcome for e in rig.of(TurnTimings)] == ["unheard", "answered"]
        assert rig.session.record.turns == 1
        guard = rig.session.listening.turns.guard
        assert (guard.started, guard.kept, guard.discarded) == (1, 0, 1)

    call(["We open at nine.", "We close at six."], body, turn_taking=SPECULATIVE)


def test_greeting_is_paced_a_lead_ahead_and_ends_when_heard() -> None:
    async def body(rig: Rig) -> None:
        first = rig.line.actions[0]
        assert first.pcm_bytes == 4800  # "Hi." is 150 ms: all of it in the first frame
        assert rig.tts.texts == [GREETING]

    call([], body)
