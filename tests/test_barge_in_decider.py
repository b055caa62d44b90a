"""The two-stage barge-in decider on virtual time (no sockets, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.turntaking.barge_in import (
    Action,
    BargeInConfig,
    BargeInDecider,
    Decision,
    Phase,
)
from pipeline.turntaking.pacer import JitPacer
from pipeline.turntaking.words import BackchannelClassifier

CLASSIFIER = BackchannelClassifier()


def decider(**config: int) -> BargeInDecider:
    d = BargeInDecider(BargeInConfig(**config), CLASSIFIER)
    assert d.bot_speaking(True, 0.0) is None
    return d


def phase(d: BargeInDecider) -> Phase:
    return d.phase  # a call, so mypy does not narrow the attribute between inputs


def action(decision: Decision | None) -> Action | None:
    return None if decision is None else decision.action


def expect(decision: Decision | None, wanted: Action, reason: str) -> None:
    assert decision == Decision(wanted, reason)


def test_backchannel_pauses_then_resumes_without_interrupting() -> None:
    d = decider()
    assert action(d.vad(True, 1.00)) is Action.PAUSE
    assert phase(d) is Phase.PAUSED
    assert d.deadline() == pytest.approx(1.40)
    assert d.tick(1.2) is None
    expect(d.words("Hmm.", 1.22), Action.RESUME, "backchannel")
    assert d.vad(False, 1.35) is None
    assert d.words("Hmm.", 1.5, final=True) is None
    assert d.utterance_end(1.6) is None
    assert d.tick(5.0) is None
    assert (d.pauses, d.resumes, d.interrupts) == (1, 1, 0)
    assert phase(d) is Phase.LISTENING


@pytest.mark.parametrize("words", ["haan", "theek hai", "अच्छा", "जी हाँ", "uh-huh", "okay"])
def test_every_listed_backchannel_resumes(words: str) -> None:
    d = decider()
    d.vad(True, 0.5)
    assert action(d.words(words, 0.7)) is Action.RESUME


def test_real_words_interrupt_once() -> None:
    d = decider()
    assert action(d.vad(True, 1.0)) is Action.PAUSE
    expect(d.words("Wait", 1.25), Action.INTERRUPT, "content words")
    # The caller has the floor: nothing more comes out of this utterance.
    assert d.words("Wait, stop.", 1.5, final=True) is None
    assert d.tick(10.0) is None
    assert d.vad(True, 2.0) is None
    assert d.interrupts == 1
    assert phase(d) is Phase.YIELDED


def test_noise_resumes_at_the_end_of_the_window() -> None:
    d = decider(window_ms=400)
    assert action(d.vad(True, 2.0)) is Action.PAUSE
    assert d.vad(False, 2.12) is None  # a cough: 120 ms
    assert d.tick(2.39) is None
    expect(d.tick(2.40), Action.RESUME, "no words: noise")
    assert d.deadline() is None
    assert d.interrupts == 0


def test_sustained_speech_without_words_interrupts_at_the_window() -> None:
    d = decider(window_ms=300)
    d.vad(True, 2.0)
    expect(d.tick(2.3), Action.INTERRUPT, "speech without words past the window")


def test_late_content_after_a_noise_resume_still_interrupts() -> None:
    d = decider()
    d.vad(True, 1.0)
    d.vad(False, 1.2)
    assert action(d.tick(1.4)) is Action.RESUME
    assert action(d.words("stop", 1.55)) is Action.INTERRUPT


def test_content_following_a_backchannel_interrupts() -> None:
    d = decider()
    d.vad(True, 1.0)
    assert action(d.words("ok", 1.2)) is Action.RESUME
    assert action(d.words("ok so what about Sunday", 1.6)) is Action.INTERRUPT


def test_a_new_onset_after_a_backchannel_pauses_again() -> None:
    d = decider()
    d.vad(True, 1.0)
    d.words("haan", 1.2)
    d.vad(False, 1.3)
    assert action(d.vad(True, 1.8)) is Action.PAUSE
    assert action(d.words("haan, lekin", 2.0)) is Action.INTERRUPT


def test_backchannels_running_on_too_long_interrupt() -> None:
    d = decider(max_backchannel_ms=1200)
    d.vad(True, 1.0)
    d.words("haan", 1.2)
    assert d.deadline() == pytest.approx(2.2)
    assert d.tick(2.1) is None
    expect(d.tick(2.2), Action.INTERRUPT, "speaking too long for a backchannel")


def test_many_words_interrupt_even_if_all_backchannels() -> None:
    d = decider()
    d.vad(True, 1.0)
    expect(d.words("yes yes yes yes yes", 1.3), Action.INTERRUPT, "many words")


def test_min_content_words_applies_to_interims_not_finals() -> None:
    d = decider(min_content_words=2)
    d.vad(True, 1.0)
    assert d.words("ok wait", 1.2) is None  # one content word: keep deciding
    assert phase(d) is Phase.PAUSED
    assert action(d.words("ok wait", 1.3, final=True)) is Action.INTERRUPT
    d2 = decider(min_content_words=2)
    d2.vad(True, 1.0)
    assert action(d2.words("wait stop", 1.2)) is Action.INTERRUPT


def test_words_without_a_vad_onset_are_judged_at_once() -> None:
    d = decider()
    assert d.words("hmm", 1.0) is None
    assert phase(d) is Phase.LISTENING
    assert action(d.words("stop please", 1.2)) is Action.INTERRUPT
    assert d.pauses == 0


def test_nothing_happens_while_the_bot_is_silent() -> None:
    d = BargeInDecider(BargeInConfig(), CLASSIFIER)
    assert d.vad(True, 1.0) is None
    assert d.words("what time do you open", 1.3) is None
    assert d.tick(5.0) is None
    assert d.deadline() is None
    assert phase(d) is Phase.IDLE


def test_caller_already_speaking_when_the_reply_starts_pauses_it() -> None:
    d = BargeInDecider(BargeInConfig(), CLASSIFIER)
    d.vad(True, 1.0)
    expect(d.bot_speaking(True, 1.5), Action.PAUSE, "caller speaking as the reply starts")
    assert d.deadline() == pytest.approx(1.9)


def test_known_content_at_the_onset_interrupts_without_pausing() -> None:
    d = BargeInDecider(BargeInConfig(), CLASSIFIER)
    d.vad(True, 1.0)
    d.words("and also", 1.2)  # while the bot was still silent
    d.vad(False, 1.4)
    d.bot_speaking(True, 1.5)
    assert action(d.vad(True, 1.6)) is Action.INTERRUPT
    assert d.pauses == 0


def test_utterance_end_while_paused_resumes() -> None:
    d = decider()
    d.vad(True, 1.0)
    d.vad(False, 1.1)
    decision = d.utterance_end(1.2)
    assert action(decision) is Action.RESUME
    assert phase(d) is Phase.LISTENING


def test_reply_over_returns_to_idle_and_the_next_reply_starts_clean() -> None:
    d = decider()
    d.vad(True, 1.0)
    d.words("stop", 1.2)
    assert d.bot_speaking(False, 1.3) is None
    assert phase(d) is Phase.IDLE
    d.vad(False, 1.5)
    d.utterance_end(1.8)
    assert d.bot_speaking(True, 3.0) is None
    assert phase(d) is Phase.LISTENING
    assert action(d.vad(True, 4.0)) is Action.PAUSE


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"window_ms": 10}, "window_ms"),
        ({"window_ms": 800, "max_backchannel_ms": 500}, "max_backchannel_ms"),
        ({"min_content_words": 0}, "min_content_words"),
    ],
)
def test_config_validation(config: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BargeInConfig(**config)


# --- with the pacer: playback continues from where it paused -----------------------------


@dataclass
class Reply:
    """A reply of ``chunks`` 100 ms chunks paced on virtual time and steered by the decider."""

    chunks: int
    lead_s: float = 0.4
    chunk_s: float = 0.1
    pacer: JitPacer = field(init=False)
    sent: list[int] = field(default_factory=list)  # chunk indexes, in send order
    kills: list[float] = field(default_factory=list)
    heard_until: float = 0.0  # when the caller's audio ended

    def __post_init__(self) -> None:
        self.pacer = JitPacer(self.lead_s)

    def run(self, d: BargeInDecider, script: list[tuple[float, str, object]]) -> None:
        """Advance in 10 ms steps to the end, applying ``script`` events at their times."""
        events = sorted(script, key=lambda e: e[0])
        now = 0.0
        while (len(self.sent) < self.chunks and not self.kills) or events:
            while events and events[0][0] <= now + 1e-9:
                _, kind, arg = events.pop(0)
                if kind == "vad":
                    assert isinstance(arg, bool)
                    self.apply(d.vad(arg, now), now)
                elif kind == "words":
                    assert isinstance(arg, str)
                    self.apply(d.words(arg, now), now)
                elif kind == "end":
                    self.apply(d.utterance_end(now), now)
            deadline = d.deadline()
            if deadline is not None and now >= deadline - 1e-9:
                self.apply(d.tick(now), now)
            at = self.pacer.send_at(now, self.chunk_s)
            sendable = at is not None and at <= now + 1e-9
            if sendable and len(self.sent) < self.chunks and not self.kills:
                self.sent.append(len(self.sent))
                self.heard_until = self.pacer.sent(now, self.chunk_s)[1]
                continue
            now = round(now + 0.01, 6)
            if now > 60:
                raise AssertionError("scenario did not finish")

    def apply(self, decision: Decision | None, now: float) -> None:
        if decision is None:
            return
        if decision.action is Action.PAUSE:
            self.pacer.pause()
        elif decision.action is Action.RESUME:
            self.pacer.resume()
        else:
            self.kills.append(now)
            self.pacer.clear(now)
            self.heard_until = min(self.heard_until, now)


def test_hmm_over_a_reply_pauses_and_resumes_with_every_chunk_played_in_order() -> None:
    d = decider()
    reply = Reply(chunks=30)
    reply.run(d, [(1.0, "vad", True), (1.2, "words", "hmm"), (1.3, "vad", False)])
    assert reply.kills == []
    assert reply.sent == list(range(30))  # nothing skipped, nothing repeated
    # The caller heard no gap: the lead queued at the line covered the pause.
    assert reply.heard_until == pytest.approx(3.0, abs=0.02)


def test_wait_stop_over_a_reply_kills_it_within_the_lead() -> None:
    d = decider()
    reply = Reply(chunks=30)
    reply.run(d, [(1.0, "vad", True), (1.25, "words", "wait"), (1.6, "vad", False)])
    assert reply.kills == [pytest.approx(1.25)]
    assert reply.heard_until == pytest.approx(1.25)
    # Nothing was sent after the onset: at most the lead was ever queued past it.
    assert len(reply.sent) <= round((1.0 + reply.lead_s) / reply.chunk_s) + 1


# --- invariants over random event sequences -------------------------------------------------

EVENT = st.one_of(
    st.tuples(st.just("vad"), st.booleans()),
    st.tuples(st.just("words"), st.sampled_from(["hmm", "ok", "haan", "wait", "ok stop", ""])),
    st.tuples(st.just("final"), st.sampled_from(["hmm", "stop", "theek hai"])),
    st.tuples(st.just("end"), st.none()),
    st.tuples(st.just("bot"), st.booleans()),
    st.tuples(st.just("tick"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.5), EVENT), max_size=40))
def test_decisions_are_well_formed_for_any_input(steps: list[tuple[float, object]]) -> None:
    """RESUME only after PAUSE; at most one INTERRUPT per reply; silence while idle."""
    d = BargeInDecider(BargeInConfig(), CLASSIFIER)
    now = 0.0
    paused = False
    interrupts_this_reply = 0
    for gap, event in steps:
        now += gap
        assert isinstance(event, tuple)
        kind, arg = event
        phase_before = d.phase
        if kind == "vad":
            decision = d.vad(bool(arg), now)
        elif kind == "words":
            decision = d.words(str(arg), now)
        elif kind == "final":
            decision = d.words(str(arg), now, final=True)
        elif kind == "end":
            decision = d.utterance_end(now)
        elif kind == "bot":
            if not arg or phase_before in (Phase.IDLE, Phase.YIELDED):
                paused = False  # the reply is over, or a new one starts
                interrupts_this_reply = 0
            decision = d.bot_speaking(bool(arg), now)
        else:
            deadline = d.deadline()
            decision = d.tick(deadline if deadline is not None else now)
        if decision is None:
            continue
        assert phase_before not in (Phase.IDLE, Phase.YIELDED) or kind == "bot"
        if decision.action is Action.PAUSE:
            assert not paused
            paused = True
        elif decision.action is Action.RESUME:
            assert paused
            paused = False
        else:
            interrupts_this_reply += 1
            assert interrupts_this_reply == 1
            paused = False
