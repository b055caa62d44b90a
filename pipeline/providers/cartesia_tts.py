"""Cartesia text-to-speech over SSE (``POST /tts/sse``), raw PCM out.

Cartesia renders 8000/16000/22050/24000/44100/48000 Hz; a Stream Node at 32 kHz gets the
nearest rate above it, resampled here, so the session always receives the call's rate.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx

from audio.resample import StreamResampler, nearest_supported_rate
from config.logs import get_logger
from config.settings import CartesiaSettings
from pipeline.providers.base import ProviderError, ProviderTimeout, status_error
from pipeline.providers.warm import warm_together
from pipeline.retry import PhaseClock
from wire.sse import SseParser

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


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> ProviderError:
    message = body[:300].decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            message = str(
                parsed.get("message") or parsed.get("title") or parsed.get("error") or message
            )
    except ValueError:
        pass
    return status_error(_PROVIDER, status, message, headers)


class CartesiaTTS:
    name = "cartesia"

    def __init__(self, settings: CartesiaSettings, *, http: httpx.AsyncClient) -> None:
        self._http = http
        self._root = settings.base_url.rstrip("/") + "/"
        self._url = self._root + "tts/sse"
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        self._headers = {
            "X-API-Key": api_key,
            "Cartesia-Version": settings.version,
            "Accept": "text/event-stream",
        }
        self.voice_id = settings.voice_id or ""
        self.model = settings.model
        self.language = settings.language
        self.connect_timeout_s = settings.connect_timeout_s
        self.first_audio_timeout_s = settings.first_audio_timeout_s
        self.idle_timeout_s = settings.idle_timeout_s
        # httpx's read timeout is a backstop; synthesize() times audio itself, because
        # bytes that are not audio (SSE comments, empty events) must not reset the clock.
        backstop = max(settings.first_audio_timeout_s, settings.idle_timeout_s) + 1.0
        self._timeout = httpx.Timeout(backstop, connect=settings.connect_timeout_s)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the app's, shared with the KPI client."""

    def status(self) -> dict[str, Any]:
        """For /health: the transport (its connections are the app's HTTP pool's)."""
        return {"transport": "sse"}

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return (self.name, self.model, self.voice_id, self.language, str(sample_rate), text)

    async def warm_connections(self, connections: int) -> int:
        """``GET /`` (the API's status, no synthesis) on ``connections`` pooled connections."""
        return await warm_together(connections, self._ping)

    async def _ping(self, hold: Callable[[], Awaitable[None]]) -> bool:
        try:
            request = self._http.stream(
                "GET", self._root, headers=self._headers, timeout=self._timeout
            )
            async with request as response:
                await hold()  # keep this connection busy until every probe has one
                await response.aread()  # a read body returns the connection to the pool
        except httpx.HTTPError as exc:
            log.warning("Warm-up request failed: %r", exc)
            return False
        return response.status_code < 500

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
        # Bytes that are not audio (SSE comments, empty events) never reset these clocks.
        clock = PhaseClock(
            _PROVIDER, "first_audio", self.first_audio_timeout_s, self.idle_timeout_s
        )
        parser = SseParser()
        try:
            async with contextlib.AsyncExitStack() as stack:
                response = await self._open(stack, body, clock)
                reads = response.aiter_bytes()
                finished = False
                while not finished:
                    try:
                        events = parser.feed(await clock.next(reads))
                    except StopAsyncIteration:
                        events, finished = parser.close(), True
                    for sse in events:
                        event = _parse_event(sse.data)
                        kind = event.get("type")
                        if kind == "chunk":
                            pcm = decode_audio(event.get("data"))
                            if resampler is not None:
                                pcm = resampler.process(pcm)
                            if not pcm:
                                continue
                            if first_audio_ms is None:
                                first_audio_ms = (time.monotonic() - started) * 1000
                            clock.result()
                            chunks += 1
                            pcm_bytes += len(pcm)
                            yield pcm
                        elif kind == "error":
                            raise error_event(event)
                        elif kind == "done" or event.get("done") is True:
                            finished = True
                            break
        except httpx.ConnectTimeout as exc:
            raise ProviderTimeout(_PROVIDER, "connect", self.connect_timeout_s) from exc
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

    async def _open(
        self, stack: contextlib.AsyncExitStack, body: dict[str, Any], clock: PhaseClock
    ) -> httpx.Response:
        """POST the request; the response headers count against the first-audio deadline."""
        async with clock.opening():
            response = await stack.enter_async_context(
                self._http.stream(
                    "POST", self._url, json=body, headers=self._headers, timeout=self._timeout
                )
            )
            if response.status_code != 200:
                raise error_from_response(
                    response.status_code, await response.aread(), response.headers
                )
        return response


def error_event(event: dict[str, Any]) -> ProviderError:
    """An in-stream ``error`` event (SSE or WebSocket); its ``status_code`` decides whether
    to retry. SSE carries ``message``/``title``, the WebSocket an ``error`` string."""
    raw = event.get("status_code")
    status = raw if isinstance(raw, int) and not isinstance(raw, bool) else 500
    detail = event.get("message") or event.get("title") or event.get("error")
    return status_error(_PROVIDER, status, f"stream error: {detail}")


def _parse_event(payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise ProviderError(_PROVIDER, "malformed SSE event", retryable=True) from exc
    if not isinstance(event, dict):
        raise ProviderError(_PROVIDER, "SSE event is not an object", retryable=True)
    return event


def decode_audio(data: object) -> bytes:
    if not isinstance(data, str):
        raise ProviderError(_PROVIDER, "chunk without audio data", retryable=True)
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as exc:
        raise ProviderError(_PROVIDER, "chunk audio is not base64", retryable=True) from exc
