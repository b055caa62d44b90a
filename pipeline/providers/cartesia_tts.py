"""Cartesia text-to-speech over SSE (``POST /tts/sse``), raw PCM out.

Cartesia renders 8000/16000/22050/24000/44100/48000 Hz; a Stream Node at 32 kHz gets the
nearest rate above it, resampled here, so the session always receives the call's rate.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from audio.resample import StreamResampler, nearest_supported_rate
from config.logs import get_logger
from pipeline.providers.base import ProviderError

log = get_logger("CARTESIA")

_PROVIDER = "cartesia"
CARTESIA_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def request_body(
    *, text: str, model: str, voice_id: str, language: str, sample_rate: int, context_id: str
) -> dict[str, Any]:
    """The /tts/sse JSON body (pure, for tests)."""
    return {
        "model_id": model,
        "transcript": text,
        "voice": {"mode": "id", "id": voice_id},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": sample_rate},
        "language": language,
        "context_id": context_id,
    }


def error_from_response(status: int, body: bytes) -> ProviderError:
    message = body[:300].decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            message = str(
                parsed.get("message") or parsed.get("title") or parsed.get("error") or message
            )
    except ValueError:
        pass
    retryable = status in (408, 429) or status >= 500
    return ProviderError(_PROVIDER, f"HTTP {status}: {message}", retryable=retryable, status=status)


class CartesiaTTS:
    name = "cartesia"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        api_key: str,
        voice_id: str,
        base_url: str,
        model: str,
        version: str,
        language: str = "en",
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 5.0,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/tts/sse"
        self._headers = {
            "X-API-Key": api_key,
            "Cartesia-Version": version,
            "Accept": "text/event-stream",
        }
        self.voice_id = voice_id
        self.model = model
        self.language = language
        # read timeout bounds the first byte and each idle gap between SSE events.
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return (self.name, self.model, self.voice_id, self.language, str(sample_rate), text)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        render_rate = nearest_supported_rate(sample_rate, CARTESIA_RATES)
        resampler = (
            StreamResampler(render_rate, sample_rate) if render_rate != sample_rate else None
        )
        body = request_body(
            text=text,
            model=self.model,
            voice_id=self.voice_id,
            language=self.language,
            sample_rate=render_rate,
            context_id=uuid.uuid4().hex,
        )
        started = time.monotonic()
        first_audio_ms: float | None = None
        chunks = 0
        pcm_bytes = 0
        log.info('TTS request | chars=%d rate=%d text="%s"', len(text), render_rate, text[:80])
        try:
            async with self._http.stream(
                "POST", self._url, json=body, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    raise error_from_response(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = _parse_event(line[5:])
                    kind = event.get("type")
                    if kind == "chunk":
                        pcm = _decode_audio(event.get("data"))
                        if resampler is not None:
                            pcm = resampler.process(pcm)
                        if not pcm:
                            continue
                        if first_audio_ms is None:
                            first_audio_ms = (time.monotonic() - started) * 1000
                        chunks += 1
                        pcm_bytes += len(pcm)
                        yield pcm
                    elif kind == "error":
                        status = int(event.get("status_code") or 500)
                        raise ProviderError(
                            _PROVIDER,
                            f"stream error {status}: {event.get('message') or event.get('title')}",
                            retryable=status >= 500 or status == 429,
                            status=status,
                        )
                    elif kind == "done" or event.get("done") is True:
                        break
        except httpx.TimeoutException as exc:
            raise ProviderError(
                _PROVIDER, f"timed out ({type(exc).__name__})", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(_PROVIDER, f"transport error: {exc!r}", retryable=True) from exc
        if resampler is not None:
            tail = resampler.process(b"", last=True)
            if tail:
                pcm_bytes += len(tail)
                yield tail
        log.info(
            "Stream summary | chunks=%d audio_ms=%d first_audio_ms=%s total_ms=%.0f",
            chunks,
            pcm_bytes * 1000 // (sample_rate * 2),
            "-" if first_audio_ms is None else f"{first_audio_ms:.0f}",
            (time.monotonic() - started) * 1000,
        )


def _parse_event(payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise ProviderError(_PROVIDER, "malformed SSE event", retryable=True) from exc
    if not isinstance(event, dict):
        raise ProviderError(_PROVIDER, "SSE event is not an object", retryable=True)
    return event


def _decode_audio(data: object) -> bytes:
    if not isinstance(data, str):
        raise ProviderError(_PROVIDER, "chunk without audio data", retryable=True)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ProviderError(_PROVIDER, "chunk audio is not base64", retryable=True) from exc
