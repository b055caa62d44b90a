"""Caller words, normalised, and whether they are a backchannel or content.

A *backchannel* is what a listener says to show they are following ("hmm", "ok", "haan",
"theek hai", "हाँ"): it must not take the turn from the bot. Anything else is *content*.
An utterance is a backchannel when every word of it belongs to a phrase on the list and
it is short (``max_words``); its *content words* are the words no phrase covers.

Matching is forgiving in the ways speech recognisers and people vary: case, punctuation
(including the danda ``।``), hyphens ("uh-huh" = "uh huh"), stretched letters ("hmmm",
"haaan", "okkk"), chandrabindu versus anusvara ("हाँ" = "हां"), and zero-width joiners.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_BACKCHANNELS",
    "BackchannelClassifier",
    "WordsVerdict",
    "asks_question",
    "normalise",
]

# English, Hindi/Hinglish in Latin script, and Hindi in Devanagari. Spelling variants that
# the matching key already folds (stretched letters, हाँ/हां) need no entry of their own.
DEFAULT_BACKCHANNELS: Final[tuple[str, ...]] = (
    # English
    "hmm", "hm", "mm", "mhm", "mm-hmm", "uh-huh", "uh", "um", "ah", "oh", "aha", "ok",
    "okay", "k", "yes", "yeah", "yep", "yup", "ya", "right", "sure", "alright",
    "all right", "i see", "got it", "cool", "fine", "great", "good", "nice", "exactly",
    "true", "indeed", "of course", "go on", "thanks", "thank you",
    # Hindi / Hinglish, Latin script
    "haan", "han", "ha", "haanji", "hanji", "haan ji", "ji", "ji haan", "achha", "acha",
    "accha", "achcha", "theek hai", "thik hai", "theek", "thik", "sahi", "sahi hai",
    "bilkul", "hmm ji", "ok ji", "achha ji", "samjha", "samjhi", "samajh gaya",
    "samajh gayi", "haan haan", "bolo", "boliye",
    # Hindi, Devanagari
    "हाँ", "हा", "हाँजी", "हाँ जी", "जी", "जी हाँ", "हम्म", "हूँ", "अच्छा", "अच्छा जी",
    "ठीक है", "ठीक", "सही", "सही है", "बिल्कुल", "ओके", "ओह", "समझ गया", "समझ गई",
    "बोलिए", "धन्यवाद",
)  # fmt: skip

_APOSTROPHES: Final = ("'", "’", "ʼ")  # dropped without splitting: "don't" == "dont"
_JOINERS: Final = ("-", "‐", "‑", "–", "—", "/", "_")  # split words, never glue them
_REPEATS = re.compile(r"(.)\1+")
_FOLD: Final = str.maketrans({"ँ": "ं"})  # chandrabindu -> anusvara: हाँ == हां


def normalise(text: str) -> str:
    """Text for comparing transcripts: NFC, case-folded, words only, single spaces.

    Marks stay (Devanagari vowel signs are marks); punctuation (the danda too), symbols
    and separators split words; format characters (ZWJ/ZWNJ) and apostrophes vanish.
    """
    text = unicodedata.normalize("NFC", text).casefold()
    for apostrophe in _APOSTROPHES:
        text = text.replace(apostrophe, "")
    for joiner in _JOINERS:
        text = text.replace(joiner, " ")
    kept: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cf":
            continue
        kept.append(" " if category[0] in "PSCZ" else ch)
    return " ".join("".join(kept).split())


def _key(text: str) -> tuple[str, ...]:
    """The matching key of a phrase: normalised, folded, stretched letters squeezed."""
    folded = normalise(text).translate(_FOLD)
    return tuple(_REPEATS.sub(r"\1", word) for word in folded.split())


def asks_question(bot_text: str) -> bool:
    """Whether the bot's line ended by asking the caller something ("...book it?")."""
    stripped = bot_text.rstrip().rstrip("\"'”’»)]*_ ")
    return stripped.endswith(("?", "？", "؟"))


@dataclass(frozen=True, slots=True)
class WordsVerdict:
    """How many words an utterance has, and how many of them are content."""

    words: int
    content_words: int
    backchannel: bool  # some words, none of them content, at most ``max_words``

    @property
    def empty(self) -> bool:
        return self.words == 0


class BackchannelClassifier:
    """Classifies utterances against a configurable backchannel phrase list."""

    __slots__ = ("_longest", "_max_words", "_phrases")

    def __init__(
        self, phrases: Iterable[str] = DEFAULT_BACKCHANNELS, *, max_words: int = 4
    ) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        keys = {_key(phrase) for phrase in phrases}
        keys.discard(())
        if not keys:
            raise ValueError("the backchannel list has no phrase with a word in it")
        self._phrases: frozenset[tuple[str, ...]] = frozenset(keys)
        self._longest = max(len(key) for key in keys)
        self._max_words = max_words

    @property
    def max_words(self) -> int:
        return self._max_words

    def classify(self, text: str) -> WordsVerdict:
        words = _key(text)
        content = self._uncovered(words)
        backchannel = bool(words) and content == 0 and len(words) <= self._max_words
        return WordsVerdict(len(words), content, backchannel)

    def is_backchannel(self, text: str) -> bool:
        return self.classify(text).backchannel

    def _uncovered(self, words: tuple[str, ...]) -> int:
        """Fewest words left over when covering ``words`` with listed phrases (DP)."""
        best = [0] * (len(words) + 1)
        for end in range(1, len(words) + 1):
            best[end] = best[end - 1] + 1
            for size in range(1, min(self._longest, end) + 1):
                if words[end - size : end] in self._phrases:
                    best[end] = min(best[end], best[end - size])
        return best[-1]
