"""Turn-taking for a whole call on virtual time: caller events in, commands out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.call.listening import Listening
from pipeline.providers.base import STTEvent, STTEventKind
from pipeline.turntaking.barge_in import Action, BargeInConfig, Decision
from pipeline.turntaking.config import TurnTakingConfig
from pipeline.turntaking.listener import (
    BotState,
    CancelReply,
    Command,
    KeepReply,
    StartReply,
    TurnTaker,
)
from pipeline.turntaking.preemptive import PreemptiveConfig


class Call:
    """Drives a TurnTaker through timed events, running its ticks at its deadlines."""

    def __init__(self, **config: Any) -> None:
        self.tt = TurnTaker(TurnTakingConfig(**config))
        self.now = 0.0
        self.log: list[tuple[float, Command]] = []
        self.trace: list[Command | str] = []  # the commands, and when a reply ended

    def at(self, t: float) -> Call:
        while (due := self.tt.deadline()) is not None and due <= t:
            self.now = max(self.now, due)
            self._record(self.tt.tick(self.now))
            after = self.tt.deadline()
            assert after is None or after > self.now, "tick must move the deadline on"
        self.now = t
        return self

    def vad(self, t: float, speech: bool) -> Call:
        self.at(t)._record(self.tt.vad(speech, t))
        return self

    def interim(self, t: float, text: str) -> Call:
        self.at(t)._record(self.tt.stt(STTEvent(STTEventKind.INTERIM, text), t))
        return self

    def final(self, t: float, text: str, *, speech_final: bool = True) -> Call:
        event = STTEvent(STTEventKind.FINAL, text, speech_final=speech_final)
        self.at(t)._record(self.tt.stt(event, t))
        return self

    def utterance_end(self, t: float) -> Call:
        self.at(t)._record(self.tt.stt(STTEvent(STTEventKind.UTTERANCE_END), t))
        return self

    def bot(self, t: float, state: BotState, line: str | None = None) -> Call:
        self.at(t)._record(self.tt.reply_state(state, t, line=line))
        if state is BotState.SILENT:
            self.trace.append("reply ended")
        return self

    def say(self, start: float, end: float, text: str, *, quiet_final: float = 0.35) -> Call:
        """The caller says ``text`` from ``start`` to ``end``: VAD, interims, final."""
        words = text.split()
        self.vad(start, True)
        step = (end - start) / len(words)
        for i in range(1, len(words) + 1):
            self.interim(start + 0.2 + (i - 1) * step, " ".join(words[:i]))
        self.vad(end, False)
        return self.final(end + quiet_final, text)

    def commands(self, since: float = 0.0) -> list[Command]:
        return [c for t, c in self.log if t >= since]

    def _record(self, commands: list[Command]) -> None:
        self.log += [(self.now, c) for c in commands]
        self.trace += commands


NO_SPECULATION = {"preemptive": PreemptiveConfig(enabled=False)}


def pause(reason: str) -> Decision:
    return Decision(Action.PAUSE, reason)


def resume(reason: str) -> Decision:
    return Decision(Action.RESUME, reason)


def interrupt(reason: str) -> Decision:
    return Decision(Action.INTERRUPT, reason)


def test_question_then_reply() -> None:
    call = Call(**NO_SPECULATION).say(1.0, 2.5, "What time do you open tomorrow?")
    assert call.commands() == [StartReply("What time do you open tomorrow?")]
    assert call.tt.bot is BotState.PREPARING


def replying(**config: Any) -> Call:
    """A call where the bot is answering (audio playing) from t=3."""
    call = Call(**{**NO_SPECULATION, **config}).say(1.0, 2.5, "When do you open?")
    call.bot(3.0, BotState.SPEAKING)
    return call


def test_hmm_over_the_reply_pauses_and_resumes_and_starts_nothing() -> None:
    call = replying().say(4.0, 4.3, "Hmm.")
    call.at(6.0)
    assert call.commands(since=3.0) == [pause("onset"), resume("backchannel")]
    assert call.tt.bot is BotState.SPEAKING


@pytest.mark.parametrize("text", ["हाँ जी", "Achha, theek hai.", "Okay.", "Uh-huh."])
def test_backchannels_in_both_languages_never_cut_the_reply(text: str) -> None:
    call = replying().say(4.0, 4.6, text)
    call.at(8.0)
    assert interrupt("content words") not in call.commands()
    assert not [c for c in call.commands() if isinstance(c, CancelReply)]
    assert call.commands(since=3.0)[-1] == resume("backchannel")


def test_wait_stop_interrupts_and_becomes_the_next_turn() -> None:
    call = replying().say(4.0, 4.8, "Wait, stop.")
    assert call.commands(since=3.0) == [
        pause("onset"),
        interrupt("content words"),
        StartReply("Wait, stop."),
    ]


def test_noise_over_the_reply_resumes_at_the_end_of_the_window() -> None:
    call = replying(barge_in=BargeInConfig(window_ms=400)).vad(4.0, True).vad(4.1, False)
    call.at(5.0)
    assert call.log[-2:] == [(4.0, pause("onset")), (4.4, resume("no words: noise"))]


def test_yes_after_a_question_is_answered_and_ok_after_a_statement_is_held() -> None:
    call = Call(**NO_SPECULATION, backchannel_hold_s=4.0)
    call.bot(0.0, BotState.SPEAKING).bot(1.0, BotState.SILENT, line="Shall I book it?")
    call.say(2.0, 2.3, "Yes.")
    assert call.commands() == [StartReply("Yes.")]
    call.bot(3.0, BotState.SPEAKING).bot(4.0, BotState.SILENT, line="It is booked.")
    call.say(5.0, 5.3, "Okay.")
    assert call.commands(since=4.0) == []
    call.say(6.0, 7.0, "And the price?")
    assert call.commands(since=4.0) == [StartReply("Okay. And the price?")]


def test_a_held_ok_is_answered_if_the_caller_then_waits() -> None:
    call = Call(**NO_SPECULATION, backchannel_hold_s=4.0)
    call.bot(0.0, BotState.SPEAKING).bot(1.0, BotState.SILENT, line="It is booked.")
    call.say(2.0, 2.3, "Okay.")  # final at 2.65
    call.at(10.0)
    [(when, command)] = call.log
    assert when == pytest.approx(6.65)
    assert command == StartReply("Okay.")


def test_content_while_a_reply_is_prepared_cancels_it_but_a_backchannel_does_not() -> None:
    call = Call(**NO_SPECULATION).say(1.0, 2.0, "Book a table")
    call.say(2.5, 2.8, "hmm")
    assert call.commands(since=2.5) == []
    call.say(3.0, 4.0, "for two please")
    assert call.commands(since=3.0) == [
        CancelReply("caller still speaking"),
        StartReply("for two please"),
    ]


def test_the_reply_starting_while_the_caller_talks_is_paused() -> None:
    call = Call(**NO_SPECULATION).say(1.0, 2.0, "Book a table")
    call.vad(2.6, True)
    call.bot(2.7, BotState.SPEAKING)
    assert call.commands(since=2.6) == [pause("caller speaking as the reply starts")]


# --- preemptive reply ------------------------------------------------------------------------


def test_a_stable_interim_starts_the_reply_and_the_matching_final_keeps_it() -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=150))
    call.vad(1.0, True).interim(1.4, "What time").interim(1.8, "What time do you open")
    call.vad(2.0, False)
    call.at(2.2)
    assert call.log == [(2.15, StartReply("What time do you open", speculative=True))]
    call.final(2.35, "What time do you open?")
    assert call.commands(since=2.3) == [KeepReply("What time do you open?")]
    assert (call.tt.guard.started, call.tt.guard.kept) == (1, 1)


def test_a_final_that_differs_discards_the_speculation_and_answers_the_final() -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=150))
    call.vad(1.0, True).interim(1.8, "What time do you").vad(2.0, False)
    call.final(2.4, "What time do you close?")
    assert call.commands() == [
        StartReply("What time do you", speculative=True),
        CancelReply("the final differs from the interim"),
        StartReply("What time do you close?"),
    ]
    assert (call.tt.guard.started, call.tt.guard.discarded) == (1, 1)


def test_one_speculation_per_utterance_even_if_the_caller_goes_on() -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=100))
    call.vad(1.0, True).interim(1.5, "I want").vad(1.6, False)
    call.vad(2.0, True).interim(2.4, "I want a table").vad(2.6, False)
    call.at(3.0)
    assert [c for c in call.commands() if isinstance(c, StartReply)] == [
        StartReply("I want", speculative=True)
    ]


def test_no_speculation_on_an_acknowledgement_but_on_the_words_after_it() -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=100))
    call.bot(0.0, BotState.SPEAKING).bot(0.5, BotState.SILENT, line="It is booked.")
    call.vad(1.0, True).interim(1.2, "okay").vad(1.3, False)
    call.at(2.0)
    assert call.commands() == []
    call.vad(2.1, True).interim(2.5, "okay and the price").vad(2.7, False)
    call.at(3.0)
    assert call.commands() == [StartReply("okay and the price", speculative=True)]


def test_a_failed_speculative_reply_leaves_the_final_to_start_afresh() -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=100))
    call.vad(1.0, True).interim(1.5, "hello there").vad(1.6, False).at(1.8)
    call.bot(1.9, BotState.SILENT)  # the speculative reply died (provider fault)
    call.final(2.0, "hello there")
    assert call.commands() == [
        StartReply("hello there", speculative=True),
        StartReply("hello there"),
    ]
    assert call.tt.guard.discarded == 1


# --- no input sequence can make it spin or talk over itself ------------------------------

STEP = st.one_of(
    st.tuples(st.just("vad"), st.booleans()),
    st.tuples(st.just("interim"), st.sampled_from(["hmm", "ok", "what time", "wait stop"])),
    st.tuples(st.just("final"), st.sampled_from(["hmm", "what time is it", "haan"])),
    st.tuples(st.just("end"), st.none()),
    st.tuples(st.just("bot"), st.sampled_from(list(BotState))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.6), STEP), max_size=40))
def test_any_event_sequence_keeps_the_deadline_moving(steps: list[tuple[float, Any]]) -> None:
    call = Call(preemptive=PreemptiveConfig(quiet_ms=100))
    t = 0.0
    for gap, (kind, arg) in steps:
        t += gap
        if kind == "vad":
            call.vad(t, arg)
        elif kind == "interim":
            call.interim(t, arg)
        elif kind == "final":
            call.final(t, arg)
        elif kind == "end":
            call.utterance_end(t)
        else:
            call.bot(t, arg, line="Anything else?")
    call.at(t + 10.0)
    starts = [c for c in call.commands() if isinstance(c, StartReply)]
    speculative = [c for c in starts if c.speculative]
    assert len(speculative) == call.tt.guard.started
    # Never two replies at once: a new one only after the last was cancelled, cut off,
    # kept-and-finished or reported silent.
    in_flight = False
    for item in call.trace:
        if isinstance(item, StartReply):
            assert not in_flight, call.trace
            in_flight = True
        elif item == "reply ended" or isinstance(item, CancelReply) or _is_interrupt(item):
            in_flight = False
    due = call.tt.deadline()
    assert due is None or due > t + 10.0


def _is_interrupt(item: Command | str) -> bool:
    return isinstance(item, Decision) and item.action is Action.INTERRUPT


def test_a_reply_knows_where_the_caller_stopped_once() -> None:
    """The VAD's offset, less its hangover, is the end of speech a reply's timings start
    from; an onset clears it, and a reply takes it once."""
    config = TurnTakingConfig()
    listening = Listening(config, started=0.0)
    assert listening.take_end_of_speech() is None  # no VAD: unknown
    listening.vad(True, 1.0)
    listening.vad(False, 2.5)  # confirmed after end_ms of quiet
    listening.vad(True, 2.7)  # ... but they went on
    assert listening.take_end_of_speech() is None
    listening.vad(False, 4.128)
    assert listening.take_end_of_speech() == pytest.approx(4.128 - config.vad.end_ms / 1000)
    assert listening.take_end_of_speech() is None  # the next reply's utterance had no VAD
