"""Match what a caller said to an FAQ entry, a transfer request, or nothing (pure).

Callers do not say the file's questions word for word, and the transcript has small
recognition errors ("timing" for "timings", "appointments"), so matching is fuzzy, with
rapidfuzz (MIT, C++): difflib offers only a whole-string ratio, while this needs
word-order-free and part-of-sentence comparison, which rapidfuzz's ``token_set_ratio``
and ``partial_ratio`` are, and are fast (a few microseconds per comparison).

For each entry two scores (0-100) are taken, and the best entry wins if it reaches
``threshold``:

- **question**: ``token_set_ratio`` between the caller's content words and each listed
  question's (filler words such as "what", "do", "you", "please" removed);
- **keywords**: 70 for one keyword heard, +10 for each further one (a keyword is heard when
  a caller word equals it, shares its stem, or is within a small edit distance).

A transfer phrase heard anywhere in the utterance wins over every FAQ entry, and
thanks/goodbye alone gets the goodbye line. Deterministic: the same words, the same answer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from pipeline.agent_file import FaqEntry

__all__ = ["FaqMatcher", "Match", "MatchKind", "normalise"]

_NON_WORD = re.compile(r"[^a-z0-9']+")
FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "im",
        "i'm",
        "me",
        "my",
        "we",
        "you",
        "your",
        "yours",
        "it",
        "its",
        "it's",
        "is",
        "are",
        "was",
        "be",
        "am",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "please",
        "what",
        "whats",
        "what's",
        "when",
        "where",
        "how",
        "which",
        "who",
        "why",
        "to",
        "of",
        "for",
        "in",
        "on",
        "at",
        "about",
        "with",
        "and",
        "or",
        "but",
        "so",
        "just",
        "like",
        "um",
        "uh",
        "hmm",
        "okay",
        "ok",
        "well",
        "hi",
        "hello",
        "hey",
        "tell",
        "know",
        "want",
        "wanted",
        "wondering",
        "there",
        "this",
        "that",
        "these",
        "those",
        "any",
        "get",
        "have",
        "has",
        "had",
        "some",
        "also",
    ]
)
CLOSING = frozenset(
    {
        "thanks",
        "thank",
        "thankyou",
        "bye",
        "goodbye",
        "all",
        "great",
        "nothing",
        "else",
        "that's",
        "no",
    }
)


def normalise(text: str) -> list[str]:
    """Lower-case words, punctuation dropped ("What's up?" -> ["what's", "up"])."""
    return [w.strip("'") for w in _NON_WORD.split(text.lower()) if w.strip("'")]


class MatchKind(enum.Enum):
    ANSWER = "answer"
    TRANSFER = "transfer"
    CLOSING = "closing"  # only thanks / goodbye
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Match:
    kind: MatchKind
    entry: FaqEntry | None = None
    score: float = 0.0


class FaqMatcher:
    def __init__(
        self,
        entries: Sequence[FaqEntry],
        transfer_phrases: Sequence[str] = (),
        threshold: float = 70.0,
    ) -> None:
        self._entries = tuple(entries)
        self._threshold = threshold
        self._phrases = tuple(" ".join(normalise(p)) for p in transfer_phrases if normalise(p))
        self._questions = [
            [" ".join(_content(normalise(q))) for q in entry.questions] for entry in self._entries
        ]
        self._keywords = [
            [" ".join(normalise(k)) for k in entry.keywords if normalise(k)]
            for entry in self._entries
        ]

    def match(self, text: str) -> Match:
        words = normalise(text)
        if not words:
            return Match(MatchKind.NONE)
        sentence = " ".join(words)
        if any(_phrase_heard(phrase, words, sentence) for phrase in self._phrases):
            return Match(MatchKind.TRANSFER, score=100.0)
        best = Match(MatchKind.NONE)
        content = " ".join(_content(words))
        for entry, questions, keywords in zip(
            self._entries, self._questions, self._keywords, strict=True
        ):
            score = max(_question_score(content, questions), _keyword_score(keywords, words))
            if score > best.score:
                best = Match(MatchKind.ANSWER, entry, score)
        if best.score >= self._threshold:
            return best
        rest = _content(words)
        if rest and all(word in CLOSING for word in rest):
            return Match(MatchKind.CLOSING)
        return Match(MatchKind.NONE, best.entry, best.score)


def _content(words: Sequence[str]) -> list[str]:
    return [w for w in words if w not in FILLER]


def _question_score(content: str, questions: Sequence[str]) -> float:
    if not content:
        return 0.0
    return max((fuzz.token_set_ratio(content, q) for q in questions if q), default=0.0)


def _keyword_score(keywords: Sequence[str], words: Sequence[str]) -> float:
    sentence = " ".join(words)
    hits = sum(1 for keyword in keywords if _phrase_heard(keyword, words, sentence))
    return 0.0 if hits == 0 else min(100.0, 60.0 + 10.0 * hits)


def _phrase_heard(phrase: str, words: Sequence[str], sentence: str) -> bool:
    if " " in phrase:  # several words: most of them, in order, anywhere in the sentence
        return fuzz.partial_ratio(phrase, sentence) >= 85.0
    return any(_same_word(phrase, word) for word in words)


def _same_word(keyword: str, word: str) -> bool:
    if word == keyword:
        return True
    short, long = sorted((keyword, word), key=len)
    if len(short) < 4:
        return False  # "fee" / "feel": short words must match exactly
    if long.startswith(short):  # "book" ~ "booking", "appointments" ~ "appointment"
        return True
    return len(short) >= 5 and fuzz.ratio(keyword, word) >= 85.0  # "timings" ~ "timing"
