"""The splitter-wait micro-benchmark measures what it says (virtual time, no clock)."""

from __future__ import annotations

import random

from bench.sentence_wait import REPLIES, measure, tokens, waits_ms
from pipeline.sentences import SentenceSplitter


class OneTokenLate:
    """Hands each sentence over one push after the one that completed it."""

    def __init__(self) -> None:
        self._inner = SentenceSplitter()
        self._held: list[str] = []

    def push(self, delta: str) -> list[str]:
        out, self._held = self._held, self._inner.push(delta)
        return out

    def flush(self) -> str | None:
        rest = self._inner.flush()
        held = [*self._held, *([rest] if rest else [])]
        self._held = []
        return " ".join(held) if held else None


def test_tokens_keep_the_text_and_glue_terminator_runs() -> None:
    assert tokens("Hi there. See www.x.com?! Ok") == [
        "Hi",
        " there",
        ".",
        " See",
        " www",
        ".x",
        ".com",
        "?!",
        " Ok",
    ]
    for reply in REPLIES:
        assert "".join(tokens(reply)) == reply


def test_certain_ends_leave_on_their_completing_token() -> None:
    result = measure(SentenceSplitter, gap_ms=30)
    assert result["first_sentences_at_once"] == len(REPLIES)
    assert result["first_sentence_wait_ms"]["max"] == 0.0


def test_a_splitter_one_token_late_waits_one_gap() -> None:
    waits, first_at = waits_ms(OneTokenLate, "Hello there. How are you?", 30, random.Random(1))
    assert waits[0] >= 10.0  # one gap of 10..50 ms
    assert first_at > 0.0
    same, _ = waits_ms(OneTokenLate, "Hello there. How are you?", 30, random.Random(1))
    assert same == waits  # seeded: the same figures every run
