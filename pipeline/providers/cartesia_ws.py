"""Cartesia text-to-speech over its WebSocket (``/tts/websocket``), raw PCM out.

The default transport (``CARTESIA_TRANSPORT=websocket``). The process's sockets live in a
:class:`~pipeline.providers.cartesia_socket.CartesiaSocketPool` (one socket, opened at
start-up, kept open and reopened when dropped), shared by every voice of the process (the
Hindi voice is another request on the same socket); one *context* per reply. The session
pushes each sentence into the reply's context as the LLM writes it (``continue: true``),
so there is no request set-up per sentence and the voice keeps its prosody across
sentences. Leaving a context early (barge-in, hang-up) sends ``cancel``. Word timestamps
come back with the audio and tell the session which words the caller heard when they
interrupt.

Timers, as for SSE: ``connect_timeout_s`` for the socket, ``first_audio_timeout_s`` from
the first push to the first audio, and ``idle_timeout_s`` for a gap in the audio while
text is waiting to be voiced (a pause because the LLM has not written more is no fault).
That pause is why the context keeps its own deadlines rather than a
:class:`pipeline.retry.PhaseClock`, whose idle gap always runs: here it runs only while
pushed words are still unvoiced (the word timestamps say which).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from audio.resample import StreamResampler, nearest_supported_rate
from config.logs import get_logger
from config.settings import CartesiaSettings
from pipeline.providers.base import ProviderError, ProviderTimeout
from pipeline.providers.cartesia_socket import CLOSED, REOPEN, CartesiaSocket, CartesiaSocketPool
from pipeline.providers.cartesia_tts import CARTESIA_RATES, decode_audio, error_event
from pipeline.retry import RetryPolicy

log = get_logger("CARTESIA")

_PROVIDER = "cartesia"
_QUEUE_MESSAGES = 2000  # per context: well over a minute of audio; past it the reader is stuck
_CANCEL_SEND_S = 0.5


def websocket_url(base_url: str) -> str:
    """``https://api.cartesia.ai`` -> ``wss://api.cartesia.ai/tts/websocket``."""
    base = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return base + "/tts/websocket"


class CartesiaContext:
    """One reply's context (see :class:`pipeline.providers.base.SpeechContext`)."""

    def __init__(
        self,
        owner: CartesiaWebSocketTTS,
        socket: CartesiaSocket,
        sample_rate: int,
        request: dict[str, Any],
    ) -> None:
        self.context_id = request["context_id"]
        self.word_ends_s: list[float] = []
        self._owner = owner
        self._socket = socket
        self._rate = sample_rate
        self._request = request
        self._queue = socket.route(self.context_id)
        self._pushed = asyncio.Event()
        self._words_pushed = 0
        self._first_push_at: float | None = None
        self._last_push_at = 0.0
        self._ended = False
        self.finished = False  # done or error received: nothing to cancel
        self.chars = 0

    async def push(self, text: str) -> None:
        if not text.strip():
            return
        if self._first_push_at is None:
            self._first_push_at = asyncio.get_running_loop().time()
        self._last_push_at = asyncio.get_running_loop().time()
        self._words_pushed += len(text.split())
        self.chars += len(text)
        log.info(
            'TTS push | context=%s chars=%d text="%s"', self.context_id[:8], len(text), text[:80]
        )
        # Transcripts are joined verbatim: a space keeps this sentence off the next one.
        await self._socket.send({**self._request, "transcript": text + " ", "continue": True})
        self._pushed.set()

    async def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._last_push_at = asyncio.get_running_loop().time()
        if self._first_push_at is None:
            # No text at all (a reply that is only a tool call): Cartesia never heard of
            # this context, so it is over here, without a message.
            self._queue.put_nowait({"type": "done", "context_id": self.context_id})
        else:
            await self._socket.send({**self._request, "transcript": "", "continue": False})
        self._pushed.set()

    def _deadline(self, first_audio_at: float | None, last_audio_at: float) -> float | None:
        owner = self._owner
        if first_audio_at is None:
            if self._first_push_at is None:
                return None  # nothing asked yet: the LLM is still writing
            return self._first_push_at + owner.first_audio_timeout_s
        if not self._ended and len(self.word_ends_s) >= self._words_pushed:
            return None  # everything pushed is voiced: waiting for the LLM, not for us
        return max(last_audio_at, self._last_push_at) + owner.idle_timeout_s

    async def audio(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        render_rate = nearest_supported_rate(self._rate, CARTESIA_RATES)
        resampler = StreamResampler(render_rate, self._rate) if render_rate != self._rate else None
        first_audio_at: float | None = None
        last_audio_at = 0.0
        while True:
            if self._first_push_at is None and not self._ended:
                await self._pushed.wait()
            deadline = self._deadline(first_audio_at, last_audio_at)
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self._queue.get()
            except TimeoutError as exc:
                if first_audio_at is None:
                    limit = self._owner.first_audio_timeout_s
                    raise ProviderTimeout(_PROVIDER, "first_audio", limit) from exc
                raise ProviderTimeout(_PROVIDER, "idle", self._owner.idle_timeout_s) from exc
            kind = message.get("type")
            if kind == "chunk":
                pcm = decode_audio(message.get("data"))
                if resampler is not None:
                    pcm = resampler.process(pcm)
                if pcm:
                    last_audio_at = loop.time()
                    if first_audio_at is None:
                        first_audio_at = last_audio_at
                    yield pcm
            elif kind == "timestamps":
                ends = (message.get("word_timestamps") or {}).get("end") or []
                self.word_ends_s.extend(float(e) for e in ends)
            elif kind == "error":
                self.finished = True
                raise error_event(message)
            elif kind == "done" or message.get("done") is True:
                self.finished = True
                break
            elif kind == CLOSED:
                raise ProviderError(_PROVIDER, f"socket {message['reason']}", retryable=True)
        if resampler is not None:
            tail = resampler.process(b"", last=True)
            if tail:
                yield tail

    async def cancel(self) -> None:
        """Stop the context at Cartesia (best effort: the socket may be gone)."""
        if self.finished or self._socket.closed:
            return
        self.finished = True
        with contextlib.suppress(ProviderError, TimeoutError):
            async with asyncio.timeout(_CANCEL_SEND_S):
                await self._socket.send({"context_id": self.context_id, "cancel": True})


class CartesiaWebSocketTTS:
    name = "cartesia"

    def __init__(
        self,
        settings: CartesiaSettings,
        *,
        contexts_per_socket: int = 32,
        timestamps: bool = True,
        pool: CartesiaSocketPool | None = None,
        reopen: RetryPolicy = REOPEN,
    ) -> None:
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Headers, not the documented ?api_key= query: a URL ends up in logs, a header not.
        headers = {"X-API-Key": api_key, "Cartesia-Version": settings.version}
        self._owns_pool = pool is None
        self.pool = pool or CartesiaSocketPool(
            websocket_url(settings.base_url),
            headers,
            connect_timeout_s=settings.connect_timeout_s,
            contexts_per_socket=contexts_per_socket,
            queue_max=_QUEUE_MESSAGES,
            reopen=reopen,
        )
        self.url = self.pool.url
        self.voice_id = settings.voice_id or ""
        self.model = settings.model
        self.language = settings.language
        self.first_audio_timeout_s = settings.first_audio_timeout_s
        self.idle_timeout_s = settings.idle_timeout_s
        self.timestamps = timestamps

    def speaking(self, settings: CartesiaSettings) -> CartesiaWebSocketTTS:
        """Another voice or language (``settings``) on this one's sockets: the voice is
        part of every request, so one process needs no second socket for it."""
        return CartesiaWebSocketTTS(settings, timestamps=self.timestamps, pool=self.pool)

    @property
    def sockets_opened(self) -> int:
        return self.pool.opened

    def status(self) -> dict[str, Any]:
        """For /health: the transport and its sockets."""
        return {"transport": "websocket", **self.pool.status()}

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        # The same voice and model as over SSE: cached lines are the same audio.
        return (self.name, self.model, self.voice_id, self.language, str(sample_rate), text)

    async def warm_connections(self, connections: int) -> int:
        """Open the first socket (or re-open it); it serves many contexts at once."""
        try:
            await self.pool.ensure_open()
        except ProviderError as exc:
            log.warning("Warm-up failed: %s", exc)
            return 0
        return connections

    async def aclose(self) -> None:
        """Close the sockets (a voice sharing another's sockets leaves them to it)."""
        if self._owns_pool:
            await self.pool.aclose()

    # --- contexts ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def context(self, sample_rate: int) -> AsyncIterator[CartesiaContext]:
        render_rate = nearest_supported_rate(sample_rate, CARTESIA_RATES)
        request = {
            "context_id": uuid.uuid4().hex,
            "model_id": self.model,
            "voice": {"mode": "id", "id": self.voice_id},
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": render_rate,
            },
            "language": self.language,
            "add_timestamps": self.timestamps,
            "max_buffer_delay_ms": 0,  # whole sentences arrive: voice each one at once
        }
        socket = await self.pool.acquire()
        ctx = CartesiaContext(self, socket, sample_rate, request)
        started = time.monotonic()
        try:
            yield ctx
        finally:
            socket.unroute(ctx.context_id)
            if not ctx.finished:
                await ctx.cancel()
                log.info("Context cancelled | context=%s", ctx.context_id[:8])
            else:
                log.info(
                    "Context summary | context=%s chars=%d total_ms=%.0f",
                    ctx.context_id[:8],
                    ctx.chars,
                    (time.monotonic() - started) * 1000,
                )

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """One line in a context of its own (the fixed lines, the cache)."""
        async with self.context(sample_rate) as ctx:
            await ctx.push(text)
            await ctx.end()
            async for pcm in ctx.audio():
                yield pcm
