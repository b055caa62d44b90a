"""Errors of the Knowlarity account API adapter, and the pure mapping of KPI answers to them.

Knowlarity reports failures in several shapes, sometimes with HTTP 200:
``{"error": {"message": ...}}``, ``{"message": ...}`` (with an error status) and
``{"error": {field: ...}}``. Some documented error bodies are not even valid JSON. Every
one of them becomes a :class:`KnowlarityError` carrying the status and a readable message.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

# What a successful answer of each endpoint holds; anything else is an error.
Expect = Literal["success", "message", "objects"]

_MAX_TEXT = 300
_MESSAGE_IN_TEXT = re.compile(r'"message"\s*:\s*"([^"\r\n]*)')


class KnowlarityError(Exception):
    """Knowlarity refused or failed a request. ``status`` is the HTTP status (None when no
    answer arrived); ``body`` is the decoded answer, or its text if it was not JSON."""

    def __init__(self, status: int | None, message: str, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"


class KnowlarityTransportError(KnowlarityError):
    """No usable answer: connection refused, timeout, connection dropped.

    ``maybe_sent`` is True when the request may have reached Knowlarity (a timeout after
    sending), so a call may have been placed even though no answer came back.
    """

    def __init__(
        self, message: str, *, maybe_sent: bool, timed_out: bool = False, attempts: int = 1
    ) -> None:
        super().__init__(None, message)
        self.maybe_sent = maybe_sent
        self.timed_out = timed_out
        self.attempts = attempts


class InputError(ValueError):
    """A bad input, refused before any request is sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(RuntimeError):
    """A setting the operation needs is missing (e.g. KNOWLARITY_API_KEY)."""


def decode_body(text: str) -> Any:
    """The JSON value of ``text``, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def check_response(status: int, text: str, expect: Expect) -> Any:
    """The decoded body of a successful answer; raises :class:`KnowlarityError` otherwise."""
    body = decode_body(text)
    if isinstance(body, dict) and "error" in body:
        raise KnowlarityError(status, _error_message(body["error"], status), body)
    if status >= 400:
        raise KnowlarityError(status, _message_of(body, text, status), body if body else text)
    if not isinstance(body, dict):
        raise KnowlarityError(
            status, f"Knowlarity answered with an unexpected body: {_short(text)}", text
        )
    if expect not in body:
        # e.g. makecall answering 200 {"message": "Agent Number not register..."}.
        raise KnowlarityError(status, _message_of(body, text, status), body)
    return body


def _error_message(error: object, status: int) -> str:
    if isinstance(error, str) and error.strip():
        return error.strip()
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
        # {"error": {"knowlarity_number": "The knowlarity number ... is invalid."}}
        parts = [f"{key}: {_text(value)}" for key, value in error.items()]
        if parts:
            return "; ".join(parts)
    if isinstance(error, list) and error:
        return "; ".join(_text(item) for item in error)
    return f"Knowlarity reported an error (HTTP {status})"


def _message_of(body: object, text: str, status: int) -> str:
    if isinstance(body, dict):
        for key in ("message", "detail", "error_message"):
            value = body.get(key)
            if value:
                return _text(value)
    # Documented error bodies can be broken JSON, e.g. an unterminated "message" string.
    found = _MESSAGE_IN_TEXT.search(text)
    if found and found.group(1).strip():
        return found.group(1).strip()
    if text.strip():
        return f"Knowlarity answered HTTP {status}: {_short(text)}"
    return f"Knowlarity answered HTTP {status} with an empty body"


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
