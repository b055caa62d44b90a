"""Backchannel or content, and what an utterance is while the bot is silent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.turntaking.silent import SilentTurnRule, UtteranceKind
from pipeline.turntaking.words import (
    DEFAULT_BACKCHANNELS,
    BackchannelClassifier,
    asks_question,
    normalise,
)

CLASSIFIER = BackchannelClassifier()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What time do you open?", "what time do you open"),
        ("  Uh-huh…  ", "uh huh"),
        ("Theek hai।", "theek hai"),
        ("ठीक है।", "ठीक है"),
        ("हाँ॥ जी", "हाँ जी"),
        ("I don't know", "i dont know"),
        ("Rs. 3,500!", "rs 3 500"),
        ("क्\u200dया", "क्या"),  # a zero-width joiner does not split the word
        ("OKAY", "okay"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "hmm",
        "Hmm.",
        "hmmmm",
        "Mm-hmm",
        "uh-huh",
        "Uh huh.",
        "ok",
        "OK.",
        "okay",
        "Okkk",
        "yes",
        "Yeah.",
        "right",
        "Right, right.",
        "haan",
        "Haaan",
        "ha",
        "achha",
        "accha",
        "acha",
        "ji",
        "Haan ji",
        "theek hai",
        "thik hai",
        "Achha, theek hai.",
        "हाँ",
        "हां",  # anusvara spelling of हाँ
        "हम्म",
        "अच्छा",
        "जी",
        "जी हाँ",
        "ठीक है।",
        "अच्छा, ठीक है।",
        "ok ji",
        "yes yes",
    ],
)
def test_backchannels(text: str) -> None:
    verdict = CLASSIFIER.classify(text)
    assert verdict.backchannel, verdict
    assert verdict.content_words == 0


@pytest.mark.parametrize(
    ("text", "content_words"),
    [
        ("wait, stop", 2),
        ("stop", 1),
        ("ok wait", 1),
        ("haan, but what about Sunday?", 4),
        ("What time do you open tomorrow?", 6),
        ("नहीं", 1),  # "no" disagrees: content
        ("रुकिए", 1),  # "wait"
        ("हाँ, लेकिन रविवार को?", 3),
        ("no", 1),
        ("yes please book it", 3),
    ],
)
def test_content(text: str, content_words: int) -> None:
    verdict = CLASSIFIER.classify(text)
    assert not verdict.backchannel
    assert verdict.content_words == content_words


def test_too_many_backchannel_words_are_not_a_backchannel() -> None:
    verdict = CLASSIFIER.classify("yes yes yes yes yes")
    assert verdict.content_words == 0
    assert verdict.words == 5
    assert not verdict.backchannel
    assert BackchannelClassifier(max_words=5).is_backchannel("yes yes yes yes yes")


def test_empty_and_punctuation_only() -> None:
    for text in ("", "   ", "…", "।", "?!"):
        verdict = CLASSIFIER.classify(text)
        assert verdict.empty
        assert not verdict.backchannel


def test_custom_list_replaces_the_default() -> None:
    classifier = BackchannelClassifier(["mhm", "vale"])
    assert classifier.is_backchannel("Vale.")
    assert not classifier.is_backchannel("okay")


def test_list_validation() -> None:
    with pytest.raises(ValueError, match="no phrase"):
        BackchannelClassifier(["", "  ", "…"])
    with pytest.raises(ValueError, match="max_words"):
        BackchannelClassifier(max_words=0)


def test_phrase_cover_prefers_fewest_leftovers() -> None:
    # "theek" alone and "theek hai" are both listed; "hai" alone is not.
    assert CLASSIFIER.classify("theek hai").content_words == 0
    assert CLASSIFIER.classify("hai").content_words == 1


@given(st.lists(st.sampled_from(DEFAULT_BACKCHANNELS), min_size=1, max_size=2))
def test_any_short_run_of_listed_phrases_is_a_backchannel(phrases: list[str]) -> None:
    text = ", ".join(phrases)
    verdict = BackchannelClassifier(max_words=8).classify(text)
    assert verdict.content_words == 0


@given(st.text(max_size=40))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@pytest.mark.parametrize(
    ("line", "asks"),
    [
        ("Shall I book it?", True),
        ("क्या मैं बुक कर दूँ?", True),
        ('Did you say "Sunday?"', True),
        ("Your table is booked.", False),
        ("आपकी टेबल बुक हो गई है।", False),
        ("", False),
    ],
)
def test_asks_question(line: str, asks: bool) -> None:
    assert asks_question(line) is asks


# --- the rule while the bot is silent -------------------------------------------------------


def test_yes_after_a_question_is_a_turn() -> None:
    rule = SilentTurnRule(CLASSIFIER)
    assert rule.on_utterance("Yes.", bot_last_line="Shall I book it?", at=1.0) is UtteranceKind.TURN
    assert rule.take("Yes.") == "Yes."


def test_haan_after_a_hindi_question_is_a_turn() -> None:
    rule = SilentTurnRule(CLASSIFIER)
    kind = rule.on_utterance("हाँ जी", bot_last_line="क्या मैं बुक कर दूँ?", at=1.0)
    assert kind is UtteranceKind.TURN


def test_ok_after_a_statement_is_held_and_prefixes_the_next_turn() -> None:
    rule = SilentTurnRule(CLASSIFIER)
    kind = rule.on_utterance("Okay.", bot_last_line="Your table is booked.", at=10.0)
    assert kind is UtteranceKind.HELD
    assert rule.held_text == "Okay."
    assert rule.expired(11.0) is None
    kind = rule.on_utterance("And the price?", bot_last_line="Your table is booked.", at=12.0)
    assert kind is UtteranceKind.TURN
    assert rule.take("And the price?") == "Okay. And the price?"
    assert rule.held_text == ""
    assert rule.hold_deadline() is None


def test_held_acknowledgement_becomes_a_turn_after_the_hold() -> None:
    rule = SilentTurnRule(CLASSIFIER, hold_s=4.0)
    rule.on_utterance("theek hai", bot_last_line="Aapki booking ho gayi hai.", at=10.0)
    assert rule.hold_deadline() == pytest.approx(14.0)
    rule.caller_spoke(12.0)  # speaking again restarts the hold
    assert rule.expired(14.5) is None
    assert rule.expired(16.0) == "theek hai"
    assert rule.expired(30.0) is None  # taken once


def test_hold_zero_never_answers_an_acknowledgement_alone() -> None:
    rule = SilentTurnRule(CLASSIFIER, hold_s=0.0)
    rule.on_utterance("ok", bot_last_line="Done.", at=1.0)
    assert rule.hold_deadline() is None
    assert rule.expired(1e9) is None
    assert rule.held_text == "ok"


def test_content_and_empty_utterances() -> None:
    rule = SilentTurnRule(CLASSIFIER)
    assert rule.on_utterance("Book it", bot_last_line="Done.", at=0) is UtteranceKind.TURN
    assert rule.on_utterance(" . ", bot_last_line="Done.", at=0) is UtteranceKind.EMPTY
    with pytest.raises(ValueError, match="hold_s"):
        SilentTurnRule(CLASSIFIER, hold_s=-1)
