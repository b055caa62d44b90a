"""Sans-I/O half of the fake Cartesia TTS: request validation, audio, chunking, faults.

The audio is a deterministic tone (speech-level, so the fake Deepgram hears it as speech
if it is looped back) whose length is proportional to the transcript. It is cut into
sample-aligned chunks of deliberately uneven sizes (37/53/81 ms by default, never a
multiple of 100 ms) so clients cannot rely on a chunk size. Shapes follow Cartesia's
``/tts/sse`` API (``chunk`` / ``done`` / ``error`` events, base64 ``pcm_s16le``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SAMPLE_RATES",
    "CartesiaError",
    "ErrorEvent",
    "Fault",
    "HttpError",
    "SpeechChunk",
    "SpeechParams",
    "SpeechSettings",
    "Stall",
    "parse_request",
    "plan_speech",
    "word_timestamps",
]

SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
RETIRED_MODELS = frozenset({"sonic-english", "sonic-multilingual"})
_FADE_S = 0.005


@dataclass(frozen=True, slots=True)
class HttpError:
    """Fail the request with an HTTP status and the documented error JSON."""

    status: int
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Send ``after_chunks`` audio chunks, then an in-stream ``error`` event (ends it)."""

    after_chunks: int = 0
    message: str = "An internal error occurred while generating audio."
    status_code: int = 500
    title: str = "Internal Server Error"
    error_code: str = "internal_error"


@dataclass(frozen=True, slots=True)
class Stall:
    """Send ``after_chunks`` audio chunks, then no audio until the client disconnects.

    ``comment_every_s`` keeps the stalled stream warm with SSE comments, as a proxy or
    load balancer in front of the API may: bytes flow, audio does not.
    """

    after_chunks: int = 0
    comment_every_s: float | None = None


Fault = HttpError | ErrorEvent | Stall


class CartesiaError(Exception):
    """A request the real API rejects, with its documented error body."""

    def __init__(self, status: int, error_code: str, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.title, self.message = status, error_code, title, message

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error_code": self.error_code,
            "message": self.message,
            "title": self.title,
            "request_id": request_id,
        }


def _invalid(message: str, title: str = "Invalid request") -> CartesiaError:
    return CartesiaError(400, "invalid_request", title, message)


@dataclass(frozen=True, slots=True)
class SpeechParams:
    model_id: str
    transcript: str
    voice_id: str
    sample_rate: int
    context_id: str | None
    language: str | None


def _voice_id(voice: Any) -> str:
    if isinstance(voice, str) and voice:
        return voice
    if isinstance(voice, dict):
        mode, voice_id = voice.get("mode", "id"), voice.get("id")
        if mode != "id":
            raise _invalid(f"voice.mode {mode!r} is not supported; use 'id'", "Invalid voice")
        if isinstance(voice_id, str) and voice_id:
            return voice_id
    raise _invalid("voice must be a voice id or {'mode': 'id', 'id': ...}", "Invalid voice")


def _sample_rate(output_format: Any) -> int:
    if not isinstance(output_format, dict):
        raise _invalid("output_format is required", "Invalid output format")
    container, encoding = output_format.get("container"), output_format.get("encoding")
    rate = output_format.get("sample_rate")
    if container != "raw" or encoding != "pcm_s16le":
        raise _invalid(
            f"unsupported output format {container!r}/{encoding!r}; the fake streams raw pcm_s16le",
            "Invalid output format",
        )
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SAMPLE_RATES:
        raise _invalid(
            f"sample_rate must be one of {sorted(SAMPLE_RATES)}, got {rate!r}",
            "Invalid output format",
        )
    return rate


def parse_request(body: Any) -> SpeechParams:
    """Validate a /tts/sse body as the API does; raise :class:`CartesiaError` if invalid."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model_id = body.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise _invalid("model_id is required")
    if model_id in RETIRED_MODELS:
        raise CartesiaError(
            400,
            "model_not_found",
            "Invalid model",
            f"The model {model_id!r} is not valid, make sure it is a valid model ID.",
        )
    transcript = body.get("transcript")
    if not isinstance(transcript, str) or not transcript.strip():
        raise _invalid("transcript must be a non-empty string")
    context_id, language = body.get("context_id"), body.get("language")
    return SpeechParams(
        model_id=model_id,
        transcript=transcript,
        voice_id=_voice_id(body.get("voice")),
        sample_rate=_sample_rate(body.get("output_format")),
        context_id=context_id if isinstance(context_id, str) else None,
        language=language if isinstance(language, str) else None,
    )


@dataclass(frozen=True, slots=True)
class SpeechSettings:
    first_audio_ms: float = 150.0
    realtime_factor: float = 4.0  # audio is produced this much faster than real time; 0 = at once
    ms_per_char: float = 65.0
    min_audio_ms: float = 200.0
    chunk_ms: tuple[int, ...] = (37, 53, 81)
    tone_hz: float = 220.0
    amplitude: float = 0.25  # of full scale (peak); RMS is ~-15 dBFS


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    at_s: float  # when to send it, from the start of the response
    pcm: bytes
    step_time_ms: float


@functools.lru_cache(maxsize=32)
def _tone_second(rate: int, tone_hz: float, amplitude: float) -> np.ndarray[Any, Any]:
    t = np.arange(rate, dtype=np.float64) / rate
    return (np.sin(2 * np.pi * tone_hz * t) * amplitude * 32767).astype("<i2")


def tone_pcm(samples: int, rate: int, tone_hz: float = 220.0, amplitude: float = 0.25) -> bytes:
    """``samples`` of 16-bit tone at ``rate`` with 5 ms fades at both ends."""
    audio = np.resize(_tone_second(rate, tone_hz, amplitude), samples).astype(np.float32)
    fade = min(samples // 2, int(rate * _FADE_S))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio[:fade] *= ramp
        audio[-fade:] *= ramp[::-1]
    return audio.astype("<i2").tobytes()


def speech_samples(transcript: str, rate: int, settings: SpeechSettings) -> int:
    ms = max(settings.min_audio_ms, len(transcript) * settings.ms_per_char)
    return int(rate * ms / 1000)


def plan_speech(params: SpeechParams, settings: SpeechSettings) -> list[SpeechChunk]:
    """The chunks answering ``params`` and when each is due."""
    rate = params.sample_rate
    total = speech_samples(params.transcript, rate, settings)
    pcm = tone_pcm(total, rate, settings.tone_hz, settings.amplitude)
    chunks: list[SpeechChunk] = []
    position = 0
    previous_at = 0.0
    for chunk_ms in itertools.cycle(settings.chunk_ms):
        if position >= total:
            break
        size = min(total - position, max(1, rate * chunk_ms // 1000))
        at_s = settings.first_audio_ms / 1000
        if settings.realtime_factor > 0:
            at_s += position / rate / settings.realtime_factor
        data = pcm[position * 2 : (position + size) * 2]
        chunks.append(SpeechChunk(at_s, data, round((at_s - previous_at) * 1000, 3)))
        position += size
        previous_at = at_s
    return chunks


def word_timestamps(
    transcript: str, start_s: float, end_s: float
) -> tuple[list[str], list[float], list[float]]:
    """Words of ``transcript`` spread over ``[start_s, end_s]`` in proportion to their
    characters, as Cartesia's ``word_timestamps`` (seconds from the context's start)."""
    words = transcript.split()
    total = sum(len(w) for w in words) or 1
    span = max(0.0, end_s - start_s)
    starts: list[float] = []
    ends: list[float] = []
    done = 0
    for word in words:
        starts.append(round(start_s + span * done / total, 3))
        done += len(word)
        ends.append(round(start_s + span * done / total, 3))
    return words, starts, ends
