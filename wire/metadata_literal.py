"""A restricted, linear-time parser for the Python-dict literal of the metadata frame.

The Stream Node sends its metadata as a single-quoted Python dict (four short fields).
``ast.literal_eval`` accepts far more than that (sets, bytes, complex numbers, arbitrary
expression trees that it builds in full before refusing them) and its cost on crafted
input grows much faster than the input. This parser reads exactly what metadata needs,
each character once, and refuses everything else with :class:`LiteralError`::

    value   := dict | list | tuple | string | number | True | False | None
    dict    := '{' [key ':' value {',' key ':' value} [',']] '}'
    key     := string | number | True | False | None
    list    := '[' [value {',' value} [',']] ']'
    tuple   := '(' ')' | '(' value ')' | '(' value ',' [value {',' value} [',']] ')'
    string  := quoted {quoted}         adjacent literals join, as in Python
    quoted  := '...' | "..."           with Python's escapes; no prefixes, no triple quotes

Numbers are plain decimal ints and floats of at most :data:`MAX_NUMBER_CHARS`
characters; nesting is capped at ``max_depth``. Comments and line continuations are
not accepted: real metadata has neither.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_NUMBER_CHARS", "LiteralError", "parse_literal"]

MAX_NUMBER_CHARS: Final = 32

_SPACE = re.compile(r"[ \t\r\n\f\v]*")
# Runs of plain string characters (no quote, backslash or bare newline): a single-class
# repeat, which the regex engine scans without a backtracking stack.
_PLAIN = {"'": re.compile(r"[^'\\\n]*"), '"': re.compile(r'[^"\\\n]*')}
# ASCII digits only, as in Python source (str.isdigit and \d also take other scripts').
_NUMBER = re.compile(r"[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?")
_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_DIGITS = frozenset("0123456789")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPE = re.compile(
    r"\\(?:([\\'\"abfnrtv])|([0-7]{1,3})|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})"
    r"|U([0-9a-fA-F]{8})|N\{([^}\n]{1,80})\}|(\n)|(.))",
    re.S,
)
_SIMPLE_ESCAPES: Final = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_NAMES: Final[dict[str, object]] = {"True": True, "False": False, "None": None}
_CLOSERS: Final = {"{": "}", "[": "]", "(": ")"}


class LiteralError(ValueError):
    """The text is not a literal this parser accepts (the message says why, briefly)."""


def parse_literal(text: str, *, max_depth: int = 16) -> object:
    """The value of a Python literal (see the module doc); LiteralError otherwise."""
    parser = _Parser(text, max_depth)
    value = parser.value(0)
    parser.skip_space()
    if parser.pos != len(text):
        raise LiteralError(f"unexpected {parser.describe()} after the value")
    return value


class _Parser:
    __slots__ = ("max_depth", "pos", "text")

    def __init__(self, text: str, max_depth: int) -> None:
        self.text = text
        self.pos = 0
        self.max_depth = max_depth

    def describe(self) -> str:
        return f"{self.text[self.pos : self.pos + 10]!r} at {self.pos}"

    def skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise LiteralError(f"expected {char!r}, found {self.describe()}")
        self.pos += 1

    def value(self, depth: int) -> object:
        char = self.peek()
        if char in _CLOSERS:
            if depth >= self.max_depth:
                raise LiteralError(f"nested too deeply (> {self.max_depth} levels)")
            self.pos += 1
            if char == "{":
                return self.dict_body(depth + 1)
            items, trailing_comma = self.sequence_body(_CLOSERS[char], depth + 1)
            if char == "[":
                return items
            if len(items) == 1 and not trailing_comma:
                return items[0]  # "(x)" is x, as in Python
            return tuple(items)
        return self.scalar()

    def scalar(self) -> object:
        char = self.peek()
        if char in ("'", '"'):
            return self.string()
        if char and (char in _DIGITS or char in "-+."):
            return self.number()
        match = _NAME.match(self.text, self.pos)
        if match is not None and match.group() in _NAMES:
            self.pos = match.end()
            return _NAMES[match.group()]
        if not char:
            raise LiteralError("unexpected end of text")
        raise LiteralError(f"not a literal: {self.describe()}")

    def dict_body(self, depth: int) -> dict[object, object]:
        result: dict[object, object] = {}
        while self.peek() != "}":
            key = self.scalar()
            self.expect(":")
            result[key] = self.value(depth)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise LiteralError(f"expected ',' or '}}', found {self.describe()}")
        self.pos += 1
        return result

    def sequence_body(self, closer: str, depth: int) -> tuple[list[object], bool]:
        items: list[object] = []
        trailing_comma = False
        while self.peek() != closer:
            items.append(self.value(depth))
            trailing_comma = self.peek() == ","
            if trailing_comma:
                self.pos += 1
            elif self.peek() != closer:
                raise LiteralError(f"expected ',' or {closer!r}, found {self.describe()}")
        self.pos += 1
        return items, trailing_comma

    def string(self) -> str:
        parts: list[str] = []
        while self.peek() in ("'", '"'):
            parts.append(_unescape(self.quoted_body()))
        return "".join(parts)

    def quoted_body(self) -> str:
        """The raw text between the quotes at ``pos``; ``pos`` moves past the closing one."""
        text, quote, start = self.text, self.text[self.pos], self.pos
        plain = _PLAIN[quote]
        pos = start + 1
        while True:
            run = plain.match(text, pos)
            assert run is not None  # a "*" pattern always matches
            pos = run.end()
            char = text[pos : pos + 1]
            if char == quote:
                self.pos = pos + 1
                return text[start + 1 : pos]
            if char != "\\" or pos + 1 >= len(text):
                raise LiteralError(f"unterminated string at {start}")
            pos += 2  # an escape: the backslash and the character it escapes

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        token = match.group() if match is not None else ""
        if len(token) > MAX_NUMBER_CHARS:
            raise LiteralError(f"number too long (> {MAX_NUMBER_CHARS} characters)")
        if not any(ch in _DIGITS for ch in token):
            raise LiteralError(f"not a literal: {self.describe()}")
        self.pos += len(token)
        try:
            return int(token) if _INT.fullmatch(token) else float(token)
        except ValueError as exc:  # e.g. "1__0", "1e5.0"
            raise LiteralError(f"bad number {token!r}") from exc


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body
    return _ESCAPE.sub(_escape_value, body)


def _escape_value(match: re.Match[str]) -> str:
    simple, octal, hex2, hex4, hex8, name, newline, other = match.groups()
    if simple is not None:
        return _SIMPLE_ESCAPES[simple]
    if octal is not None:
        return chr(int(octal, 8))
    code = hex2 or hex4 or hex8
    if code is not None:
        value = int(code, 16)
        if value > 0x10FFFF:
            raise LiteralError(f"escape \\U{code} is out of range")
        return chr(value)
    if name is not None:
        try:
            return unicodedata.lookup(name)
        except KeyError as exc:
            raise LiteralError(f"unknown character name {name!r}") from exc
    if newline is not None:
        return ""  # a backslash-newline continues the string
    if other in ("x", "u", "U", "N"):
        raise LiteralError(f"truncated \\{other} escape")
    return "\\" + other  # Python keeps unknown escapes as written
