"""The small interfaces a speech, language or voice provider implements.

The call session only sees these; a keyless local provider (pocketsphinx, Piper, an
OpenAI-compatible local server) slots in by implementing the same three protocols.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

# --- speech to text -------------------------------------------------------------------


class STTEventKind(enum.Enum):
    SPEECH_STARTED = "speech_started"  # VAD heard something (not yet words)
    INTERIM = "interim"  # words so far, may change
    FINAL = "final"  # a finalized segment; ``speech_final`` marks an endpoint
    UTTERANCE_END = "utterance_end"  # the provider saw a gap after the last word
    RECONNECTED = "reconnected"  # the stream was re-established within the call


@dataclass(frozen=True, slots=True)
class STTEvent:
    kind: STTEventKind
    text: str = ""
    speech_final: bool = False

    @property
    def word_count(self) -> int:
        return len(self.text.split())


class STTStream(Protocol):
    def send_audio(self, pcm: bytes) -> None:
        """Queue caller audio (16-bit LE mono at the stream's rate). Never blocks."""

    def events(self) -> AsyncIterator[STTEvent]:
        """Transcription events until the stream is closed."""


class SpeechToText(Protocol):
    name: str

    def stream(self, sample_rate: int) -> AbstractAsyncContextManager[STTStream]:
        """Open one live stream for one call; closing it ends the stream gracefully."""

    async def aclose(self) -> None:
        """Release what the provider holds for the whole process (at server shutdown)."""


# --- language model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str = "{}"
    call_id: str = ""


LLMEvent = TextDelta | ToolCall


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "required": []}
    )


Message = dict[str, Any]


class LanguageModel(Protocol):
    name: str

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LLMEvent]:
        """Stream a reply: text deltas as they come, and any tool calls once complete."""

    async def aclose(self) -> None:
        """Release what the provider holds for the whole process (at server shutdown)."""


# --- text to speech -------------------------------------------------------------------


class TextToSpeech(Protocol):
    name: str

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        """Everything that changes the audio for this text (voice, model, rate...)."""

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Stream 16-bit LE mono PCM at exactly ``sample_rate``, in pieces of any even size."""

    async def aclose(self) -> None:
        """Release what the provider holds for the whole process (at server shutdown)."""


class SpeechContext(Protocol):
    """One reply voiced as one utterance: its text pushed as the LLM writes it."""

    # End time (s from the context's first audio) of each word voiced so far, when the
    # provider reports it: what the caller heard, to the word, on barge-in. Grows in place.
    word_ends_s: list[float]

    async def push(self, text: str) -> None:
        """More of the reply (a sentence or clause, as it should be joined to the last)."""

    async def end(self) -> None:
        """No more text: the audio ends once what was pushed is voiced."""

    def audio(self) -> AsyncIterator[bytes]:
        """PCM at the context's rate until everything pushed before ``end`` is voiced."""


@runtime_checkable
class ContextTextToSpeech(TextToSpeech, Protocol):
    """A TTS that can keep one context open for a whole reply (prosody across sentences)."""

    def context(self, sample_rate: int) -> AbstractAsyncContextManager[SpeechContext]:
        """Open a context; leaving it before its audio ended cancels it at the provider."""


# --- errors ---------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider failed. ``retryable`` says whether trying again may help.

    Every vendor module maps its SDK/transport errors into this tree at its boundary
    (``raise ProviderError(...) from exc``), so the session never sees a vendor type::

        ProviderError            retryable per status: 408/409/425/429/5xx yes, other 4xx no
         └── ProviderTimeout     connect, first byte/token/audio, or idle gap exceeded (retryable)
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s  # the wait the server asked for, if it said


class ProviderTimeout(ProviderError):
    """No answer in time. ``phase``: "connect", "first_byte" (response headers),
    "first_token" / "first_audio" (the first useful event), or "idle" (gap after it)."""

    def __init__(self, provider: str, phase: str, limit_s: float) -> None:
        super().__init__(provider, f"{phase} timeout after {limit_s:g} s", retryable=True)
        self.phase = phase
        self.limit_s = limit_s


def error_category(exc: ProviderError) -> str:
    """A fault's class in a few fixed words (metrics labels, call records)."""
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    status = exc.status
    if status is None:
        return "connection"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def retryable_status(status: int | None) -> bool:
    """HTTP statuses worth another attempt: rate limits, timeouts, server errors.

    ``None`` (no status at all, e.g. a handshake that died) counts as transient.
    """
    return status is None or status in _RETRYABLE_4XX or status >= 500


def status_error(
    provider: str, status: int | None, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The one way an HTTP status becomes a ProviderError, for every provider."""
    return ProviderError(
        provider,
        f"HTTP {status}: {message}",
        retryable=retryable_status(status),
        status=status,
        retry_after_s=None if headers is None else retry_after_s(headers),
    )


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms`` (OpenAI), else ``retry-after`` in
    seconds or as an HTTP date. None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return _finite_wait(float(millis) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return _finite_wait(float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _finite_wait((when - (now or datetime.now(UTC))).total_seconds())


def _finite_wait(seconds: float) -> float | None:
    return max(0.0, seconds) if math.isfinite(seconds) else None
