"""The preemptive-reply guard on virtual time."""

from __future__ import annotations

import pytest

from pipeline.turntaking.preemptive import PreemptiveConfig, PreemptiveGuard, Verdict


def spoken(guard: PreemptiveGuard, text: str, *, offset_at: float) -> None:
    """The caller says ``text`` (last interim at ``offset_at`` - 0.1) and goes quiet."""
    guard.vad(True, offset_at - 1.0)
    guard.transcript(text, offset_at - 0.1)
    guard.vad(False, offset_at)


def test_speculates_once_quiet_and_stable_and_keeps_a_matching_final() -> None:
    guard = PreemptiveGuard(PreemptiveConfig(quiet_ms=150))
    spoken(guard, "What time do you open tomorrow", offset_at=2.0)
    assert guard.candidate(2.1) is None
    assert guard.deadline() == pytest.approx(2.15)
    assert guard.candidate(2.15) == "What time do you open tomorrow"
    guard.begin("What time do you open tomorrow")
    assert guard.pending == "What time do you open tomorrow"
    assert guard.candidate(3.0) is None  # one per utterance
    assert guard.settle("What time do you open tomorrow?") is Verdict.KEEP
    assert (guard.started, guard.kept, guard.discarded) == (1, 1, 0)
    assert guard.pending is None


def test_a_different_final_discards() -> None:
    guard = PreemptiveGuard(PreemptiveConfig())
    spoken(guard, "What time do you", offset_at=2.0)
    guard.begin(guard.candidate(2.5) or "")
    assert guard.settle("What time do you close?") is Verdict.DISCARD
    assert (guard.started, guard.kept, guard.discarded) == (1, 0, 1)


def test_hindi_final_with_danda_matches_the_interim() -> None:
    guard = PreemptiveGuard(PreemptiveConfig())
    spoken(guard, "कल आप कितने बजे खुलते हैं", offset_at=1.0)
    text = guard.candidate(1.5)
    assert text is not None
    guard.begin(text)
    assert guard.settle("कल आप कितने बजे खुलते हैं?") is Verdict.KEEP


def test_no_speculation_while_the_caller_speaks_or_before_any_offset() -> None:
    guard = PreemptiveGuard(PreemptiveConfig(quiet_ms=0))
    guard.transcript("hello there", 1.0)
    assert guard.candidate(5.0) is None  # no VAD offset yet: never mid-speech
    guard.vad(True, 1.1)
    assert guard.candidate(5.0) is None
    assert guard.deadline() is None
    guard.vad(False, 5.0)
    assert guard.candidate(5.0) == "hello there"


def test_a_new_interim_restarts_the_quiet_time() -> None:
    guard = PreemptiveGuard(PreemptiveConfig(quiet_ms=200))
    spoken(guard, "book a table", offset_at=1.0)
    guard.transcript("book a table for two", 1.15)  # the STT's late words
    assert guard.candidate(1.25) is None
    assert guard.candidate(1.35) == "book a table for two"
    guard.transcript("Book a table, for two!", 1.36)  # same words: still stable
    assert guard.candidate(1.36) == "Book a table, for two!"


def test_settle_without_speculation_and_the_next_utterance_starts_fresh() -> None:
    guard = PreemptiveGuard(PreemptiveConfig())
    assert guard.settle("anything") is None
    spoken(guard, "first question", offset_at=1.0)
    guard.begin("first question")
    guard.settle("first question")
    assert guard.candidate(10.0) is None  # the old words are gone
    spoken(guard, "second question", offset_at=11.0)
    assert guard.candidate(11.5) == "second question"


def test_abandon_counts_a_discard() -> None:
    guard = PreemptiveGuard(PreemptiveConfig())
    spoken(guard, "hello", offset_at=1.0)
    guard.begin("hello")
    guard.abandon()
    assert guard.pending is None
    assert (guard.started, guard.kept, guard.discarded) == (1, 0, 1)
    guard.abandon()
    assert guard.discarded == 1


def test_disabled_never_speculates() -> None:
    guard = PreemptiveGuard(PreemptiveConfig(enabled=False))
    spoken(guard, "hello", offset_at=1.0)
    assert guard.candidate(100.0) is None
    assert guard.deadline() is None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="quiet_ms"):
        PreemptiveConfig(quiet_ms=-1)
