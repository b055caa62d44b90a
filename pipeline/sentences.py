"""Streaming sentence splitter: LLM token deltas in, TTS-ready sentences out.

A sentence is handed to TTS as soon as its end is certain, so speech can start before
the LLM finishes. Decisions depend only on the text (never on how it was chunked), so
feeding a reply token by token gives exactly what feeding it whole gives.

Boundaries:
- ``! ? । ॥`` (runs like ``?!``), plus closing quotes/brackets, then whitespace.
- ``. `` likewise, but only once the next word is visible, to rule out abbreviations
  ("Dr. Rao", "etc. and"), initials ("U.S."), list markers ("1. ") and lowercase
  continuations. Ellipses never end a sentence.
- Full-width ``。！？`` need no whitespace (CJK text has none).
- A newline.
- A sentence longer than ``max_chars`` is cut at its last clause mark (``, ; : — –``)
  within the limit, else at its last space, else hard.

Certain ends go out without waiting for the next token (it comes one LLM token later,
~30 ms): a terminator that ends the text so far is a boundary at once when the words
before it settle it. That is ``! ? । ॥ 。！？`` after a word with no URL characters, and
``.`` after a plain word of two or more letters that is no known abbreviation (so not a
number, initial, list marker, ellipsis or domain part), in both cases outside any open
quote, bracket or emphasis. Everything else keeps the lookahead above. The one thing a
certain cut cannot see is what the next token glues onto the terminator (``?!``, ``.com``,
a closing quote after the quotes were balanced): LLM tokenizers deliver those with the
terminator, so in practice the result is the same for every chunking that never splits
a terminator from the non-space characters right after it (the tests hold it to that).

``first_clause_chars`` (0 = off) also sends the first clause of a reply early: at a
``, ; : — –`` followed by a space, once the reply so far is at least that long. The
clause cut is decided by the text up to the mark and one character after it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SentenceSplitter", "split_sentences"]

_CANDIDATE = re.compile(r"[.!?।॥。！？\n]")
_RUN: Final = frozenset("!?！？।॥。")
_FULL_WIDTH: Final = frozenset("。！？")
# May follow a terminator before the whitespace; includes markdown emphasis ("**Done.**").
_CLOSERS: Final = frozenset("\"')]}”’»›」』）*_`")
_OPENERS: Final = "\"'([{“‘«*_`"
_CLAUSE: Final = ",;:—–"
_WORD_LIMIT: Final = 32  # longer tokens (URLs) are never abbreviations

# Never end a sentence, whatever follows (titles mostly precede a capitalised name).
_NEVER: Final = frozenset(
    {"mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "smt", "shri", "rev", "hon"}
    | {"capt", "col", "gen", "lt", "sgt", "st", "mt", "rs", "vs", "pvt"}
    | {"fig", "cf", "viz", "ref", "approx", "e.g", "i.e"}
)
# End a sentence only before a capitalised word ("... 9 a.m. Then"), not "etc. and".
_SOFT: Final = frozenset(
    {"etc", "a.m", "p.m", "inc", "ltd", "co", "corp", "dept", "govt", "est"}
    | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
)
# Also never a certain end without seeing the next word (units, address parts, numbering).
_MAYBE_ABBREV: Final = frozenset(
    {"no", "nos", "tel", "ph", "mob", "ext", "ave", "blvd", "rd", "hwy", "apt", "bldg", "fl"}
    | {"sq", "ft", "km", "kg", "cm", "mm", "ml", "lb", "lbs", "oz", "hr", "hrs", "min", "mins"}
    | {"sec", "secs", "yr", "yrs", "mo", "mos", "wk", "wks", "pg", "pp", "vol", "ch", "ed"}
    | {"al", "ex", "misc", "dist", "nr", "opp", "qty", "amt", "bal", "acct", "avg", "max"}
    | {"temp", "www", "univ", "bros", "assoc", "intl", "natl", "mfg", "op", "art", "sch"}
    | {"ii", "iii", "iv", "vi", "vii", "viii", "ix", "xi", "xii"}
)
_PLAIN_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")  # "done", "don't", "well-known"
_URLISH: Final = frozenset("/.:=&@#%+~\\_")
_OPEN_BRACKETS: Final = "([{（「『«‹“"
_CLOSE_BRACKETS: Final = ")]}）」』»›”"
_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # "U.S", "A", "e.g"
_HAS_WORD = re.compile(r"[^\W_]")
_LEADING_MARKUP = re.compile(r"#{1,6}\s+|[-*•+]\s+")  # heading marker or list bullet
_EMPHASIS = re.compile(r"`+|\*+")

_WAIT: Final = 0  # need more text to decide
_SKIP: Final = 1  # not a boundary
_CUT: Final = 2  # boundary


class SentenceSplitter:
    """Feed LLM deltas with push(); call flush() at the end of the reply."""

    __slots__ = ("_buf", "_clause", "_emitted", "_max", "_min", "_pos", "_start")

    def __init__(
        self, min_chars: int = 1, max_chars: int = 250, first_clause_chars: int = 0
    ) -> None:
        if max_chars < 1 or min_chars > max_chars:
            raise ValueError(
                f"need 1 <= max_chars and min_chars <= max_chars, got {min_chars}, {max_chars}"
            )
        if first_clause_chars < 0:
            raise ValueError(f"first_clause_chars must be >= 0, got {first_clause_chars}")
        self._min = min_chars
        self._max = max_chars
        self._clause = first_clause_chars
        self._emitted = False  # a first clause or sentence of this reply went out
        self._buf = ""
        self._start = 0  # start of the current sentence in _buf
        self._pos = 0  # everything in [_start, _pos) is known not to be a boundary

    def push(self, delta: str) -> list[str]:
        """Sentences completed by ``delta`` (stripped, non-empty, markdown removed)."""
        out: list[str] = []
        if not delta:
            return out
        # _buf holds only the unfinished sentence, so this copy is bounded by ~max_chars.
        buf = self._buf + delta
        n = len(buf)
        start, pos = self._start, self._pos
        while True:
            while start < n and buf[start].isspace():
                start += 1
            pos = max(pos, start)
            limit = start + self._max
            m = _CANDIDATE.search(buf, pos, min(n, limit))
            if self._clause and not self._emitted and not out:
                hi = m.start() if m is not None else min(n, limit)
                clause = _first_clause(buf, start, pos, hi, self._clause)
                if clause is not None:
                    _emit(buf[start:clause], out)
                    start = pos = clause
                    continue
            if m is None:
                if n <= limit:
                    pos = n
                    break
                cut = _forced_cut(buf, start, limit)  # over max_chars with no boundary
                _emit(buf[start:cut], out)
                start = pos = cut
                continue
            i = m.start()
            action, cut = _decide(buf, i, start)
            if action == _WAIT:
                pos = i
                break
            if action == _CUT:
                text = _clean(buf[start:cut])
                if not _HAS_WORD.search(text):
                    start = cut  # nothing speakable (e.g. "---"): drop it
                elif len(text) >= self._min:
                    out.append(text)
                    start = cut
            pos = max(cut, i + 1)
        self._buf = buf[start:]
        self._start = 0
        self._pos = pos - start
        if out:
            self._emitted = True
        return out

    def flush(self) -> str | None:
        """The unfinished rest at end of stream, if it has anything speakable; resets."""
        text = _clean(self._buf[self._start :])
        self._buf = ""
        self._start = self._pos = 0
        self._emitted = False
        return text if _HAS_WORD.search(text) else None


def split_sentences(
    text: str, *, min_chars: int = 1, max_chars: int = 250, first_clause_chars: int = 0
) -> list[str]:
    """All sentences of a complete text."""
    splitter = SentenceSplitter(min_chars, max_chars, first_clause_chars)
    out = splitter.push(text)
    rest = splitter.flush()
    if rest is not None:
        out.append(rest)
    return out


def _skip_closers(buf: str, j: int) -> int:
    n = len(buf)
    while j < n and buf[j] in _CLOSERS:
        j += 1
    return j


def _decide(buf: str, i: int, start: int) -> tuple[int, int]:
    """Classify the candidate at ``i``: (_WAIT, i), (_SKIP, resume_at) or (_CUT, cut_at)."""
    n = len(buf)
    ch = buf[i]
    if ch == "\n":
        return _CUT, i
    if ch == ".":
        return _decide_dot(buf, i, start)
    j = i + 1
    while j < n and buf[j] in _RUN:
        j += 1
    k = _skip_closers(buf, j)
    if k == n:
        return (_CUT, k) if _certain_mark(buf, i, start, k) else (_WAIT, i)
    if buf[k].isspace() or buf[j - 1] in _FULL_WIDTH:
        return _CUT, k
    return _SKIP, k


def _decide_dot(buf: str, i: int, start: int) -> tuple[int, int]:
    n = len(buf)
    j = i + 1
    if (j < n and buf[j] == ".") or (i > start and buf[i - 1] in ".…"):
        while j < n and buf[j] == ".":
            j += 1
        return _SKIP, j  # ellipsis (a run continued by a later delta is caught above)
    k = _skip_closers(buf, j)
    if (k == n or buf[k].isspace()) and _certain_dot(buf, i, start, k):
        return _CUT, k  # decided by the words before it: the same with or without lookahead
    if k == n:
        return _WAIT, i
    if not buf[k].isspace():
        return _SKIP, k  # "3.14", "www.x.com", "U.S."
    m = k
    while m < n and buf[m].isspace():
        if buf[m] == "\n":
            return _CUT, k
        m += 1
    if m == n:
        return _WAIT, i
    return (_CUT if _ends_sentence(buf, i, start, buf[m]) else _SKIP), k


def _ends_sentence(buf: str, i: int, start: int, nxt: str) -> bool:
    """Whether the '.' at ``i`` ends a sentence, given the next word starts with ``nxt``."""
    lo = max(start, i - _WORD_LIMIT)
    w = i
    while w > lo and not buf[w - 1].isspace():
        w -= 1
    if w == lo and lo > start and not buf[lo - 1].isspace():
        return not nxt.islower()  # a long token such as a URL
    word = buf[w:i].lstrip(_OPENERS)
    key = word.lower()
    if key == "no" and (nxt.isdigit() or nxt == "#"):
        return False  # "No. 5" (but "No. I can't" ends)
    if key in _NEVER:
        return False
    if key in _SOFT:
        return not (nxt.islower() or nxt.isdigit())
    if _INITIALS.fullmatch(word):
        return False
    if w == start and word.isdigit() and len(word) <= 3:
        return False  # "1. " list marker
    return not nxt.islower()


def _word_before(buf: str, i: int, start: int) -> str | None:
    """The whitespace-free run ending at ``i`` (None if longer than a word can be)."""
    lo = max(start, i - _WORD_LIMIT)
    w = i
    while w > lo and not buf[w - 1].isspace():
        w -= 1
    if w == lo and lo > start and not buf[lo - 1].isspace():
        return None
    return buf[w:i]


def _certain_mark(buf: str, i: int, start: int, end: int) -> bool:
    """``! ? । ॥ 。！？`` at ``i`` ends a sentence whatever comes next (``end``: past closers)."""
    word = _word_before(buf, i, start)
    if not word or any(ch in _URLISH for ch in word):
        return False  # "path?q=1", a bare "?"
    return _balanced(buf, start, end)


def _certain_dot(buf: str, i: int, start: int, end: int) -> bool:
    """The '.' at ``i`` ends a sentence whatever the next word is: a plain word before it."""
    word = _word_before(buf, i, start)
    if word is None:
        return False
    word = word.lstrip(_OPENERS)
    if len(word) < 2 or not _PLAIN_WORD.fullmatch(word):
        return False  # numbers, initials, list markers, domains, versions, markup
    key = word.lower()
    if key in _NEVER or key in _SOFT or key in _MAYBE_ABBREV:
        return False
    return _balanced(buf, start, end)


def _balanced(buf: str, start: int, end: int) -> bool:
    """No quote, bracket or emphasis is left open in ``buf[start:end]``: a closer may follow."""
    depth = single = stars = ticks = 0
    double = False
    prev = " "
    for k in range(start, end):
        ch = buf[k]
        if ch == '"':
            double = not double
        elif ch in _OPEN_BRACKETS or ch == "‘":
            depth += 1
        elif ch in _CLOSE_BRACKETS:
            depth = max(0, depth - 1)
        elif ch == "’":
            single = max(0, single - 1)
        elif ch == "'":
            nxt = buf[k + 1] if k + 1 < end else " "
            if prev.isspace() or prev in _OPENERS:
                single += not nxt.isspace()
            elif single and not nxt.isalnum():
                single -= 1  # "'Hi!'" closes; "don't" and "Mary's" are apostrophes
        elif ch == "*" and prev != "*":
            stars += 1  # a run ("**") is one marker
        elif ch == "`" and prev != "`":
            ticks += 1
        prev = ch
    return not (depth or single or double or stars & 1 or ticks & 1)


def _first_clause(buf: str, start: int, lo: int, hi: int, min_chars: int) -> int | None:
    """End of the reply's first clause in ``buf[lo:hi]``, once it is ``min_chars`` long.

    A clause mark right after a letter ("Sure, ...", not "1,000" or "3:30"), outside
    quotes and brackets; decided by the text up to the mark, so any chunking agrees.
    """
    for c in range(max(lo, start + min_chars - 1), hi):
        if buf[c] in _CLAUSE and c > start and buf[c - 1].isalpha() and _balanced(buf, start, c):
            return c + 1
    return None


def _forced_cut(buf: str, start: int, limit: int) -> int:
    """Cut point for an over-long sentence; ``buf[limit]`` exists."""
    # Clause marks in the first third would leave a fragment ("Yes,"), so look after it.
    lo = start + (limit - start) // 3
    best = -1
    for mark in _CLAUSE:
        p = buf.rfind(mark, lo, limit)
        while p > best and not buf[p + 1].isspace():  # "1,000", "3:30"
            p = buf.rfind(mark, lo, p)
        best = max(best, p)
    if best >= lo:
        return best + 1
    space = buf.rfind(" ", start + 1, limit + 1)
    return space if space > start else limit


def _emit(piece: str, out: list[str]) -> None:
    text = _clean(piece)
    if _HAS_WORD.search(text):
        out.append(text)


def _clean(piece: str) -> str:
    """Whitespace collapsed, markdown that TTS would read aloud removed."""
    text = " ".join(piece.split())
    if text[:1] in "#-*•+" and (lead := _LEADING_MARKUP.match(text)):
        text = text[lead.end() :]
    if "*" in text or "`" in text:
        text = _EMPHASIS.sub(_drop_emphasis, text)
        if "  " in text or text[:1] == " " or text[-1:] == " ":
            text = " ".join(text.split())
    return text


def _drop_emphasis(m: re.Match[str]) -> str:
    # Keep a lone "*" between spaces: in IVR speech it is the star key ("press * to repeat").
    s, a, b = m.string, m.start(), m.end()
    lone = m.group() == "*" and (a == 0 or s[a - 1] == " ") and (b == len(s) or s[b] in " .,;:!?")
    return "*" if lone else ""
