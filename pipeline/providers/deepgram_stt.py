"""Deepgram live speech-to-text through deepgram-sdk v7.

v7 has neither automatic KeepAlive nor reconnect, so this module owns both: it sends
``{"type":"KeepAlive"}`` whenever no audio has gone out for ``keepalive_s`` (never an empty
binary frame, which Deepgram reads as end of stream), and when the socket drops mid-call
it reconnects while holding the caller's audio in a bounded buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from config.logs import get_logger
from pipeline.providers.base import ProviderError, STTEvent, STTEventKind

log = get_logger("DEEPGRAM")

_PROVIDER = "deepgram"


def environment_for(base_url: str) -> DeepgramClientEnvironment:
    """Map ``DEEPGRAM_BASE_URL`` (ws[s]:// or http[s]://) onto the SDK's environment."""
    url = base_url.rstrip("/")
    if url.startswith("https://"):
        ws, http = "wss://" + url[len("https://") :], url
    elif url.startswith("http://"):
        ws, http = "ws://" + url[len("http://") :], url
    elif url.startswith("wss://"):
        ws, http = url, "https://" + url[len("wss://") :]
    elif url.startswith("ws://"):
        ws, http = url, "http://" + url[len("ws://") :]
    else:
        raise ValueError(
            f"DEEPGRAM_BASE_URL must start with wss://, ws://, https:// or http://: {url!r}"
        )
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


def event_from_message(message: Any) -> STTEvent | None:
    """Translate one SDK message into our event; None for messages the call ignores."""
    kind = getattr(message, "type", None)
    if kind == "Results":
        alternatives = message.channel.alternatives
        text = alternatives[0].transcript.strip() if alternatives else ""
        if message.is_final:
            return STTEvent(STTEventKind.FINAL, text, speech_final=bool(message.speech_final))
        return STTEvent(STTEventKind.INTERIM, text) if text else None
    if kind == "SpeechStarted":
        return STTEvent(STTEventKind.SPEECH_STARTED)
    if kind == "UtteranceEnd":
        return STTEvent(STTEventKind.UTTERANCE_END)
    return None


class DeepgramSTT:
    name = "deepgram"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model: str,
        language: str,
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        keepalive_s: float = 4.0,
        max_buffer_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment_for(base_url))
        self.model = model
        self.language = language
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.keepalive_s = keepalive_s
        self.max_buffer_s = max_buffer_s
        self.connect_timeout_s = connect_timeout_s

    def stream(self, sample_rate: int) -> DeepgramStream:
        return DeepgramStream(self, sample_rate)

    def connect_options(self, sample_rate: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "language": self.language,
            "encoding": "linear16",
            "sample_rate": sample_rate,
            "channels": 1,
            "interim_results": "true",
            "endpointing": self.endpointing_ms,
            "utterance_end_ms": self.utterance_end_ms,
            "vad_events": "true",
            "smart_format": "true",
            "punctuate": "true",
        }


class _Reconnect(Exception):
    """The socket ended while the call still needs it."""


class DeepgramStream:
    """One live transcription stream for one call, surviving socket drops."""

    def __init__(self, provider: DeepgramSTT, sample_rate: int) -> None:
        self._provider = provider
        self._sample_rate = sample_rate
        self._max_buffer_bytes = int(provider.max_buffer_s * sample_rate * 2)
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._dropped_bytes = 0
        self._wakeup = asyncio.Event()
        self._events: asyncio.Queue[STTEvent | None] = asyncio.Queue(maxsize=256)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.connections = 0
        self.failure: ProviderError | None = None

    async def __aenter__(self) -> DeepgramStream:
        self._task = asyncio.create_task(self._run(), name="deepgram-stream")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is None:
            return
        # Give CloseStream a moment to flush the last words, then stop regardless.
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=1.5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise

    @property
    def closing(self) -> bool:
        return self._closing

    def send_audio(self, pcm: bytes) -> None:
        if not pcm or self._closing:
            return
        self._pending.append(pcm)
        self._pending_bytes += len(pcm)
        while self._pending_bytes > self._max_buffer_bytes:
            # Keep the newest audio: the caller's latest words matter most.
            old = self._pending.popleft()
            self._pending_bytes -= len(old)
            self._dropped_bytes += len(old)
        self._wakeup.set()

    async def events(self) -> AsyncIterator[STTEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    # -- connection lifecycle ------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    await self._connect_once(reconnecting=attempt > 0 or self.connections > 0)
                    attempt = 0
                except _Reconnect as exc:
                    attempt += 1
                    log.warning("Connection lost (%s); reconnecting (attempt %d)", exc, attempt)
                except ProviderError as exc:
                    if not exc.retryable:
                        self.failure = exc
                        log.error("Stream failed: %s", exc.message)
                        return
                    attempt += 1
                    log.warning("Connect failed (%s); retrying (attempt %d)", exc.message, attempt)
                except Exception as exc:  # a bug or an SDK surprise: keep the call alive
                    attempt += 1
                    log.exception("Unexpected stream error (%r); reconnecting", exc)
                if self.closing:  # set by aclose() while we were connected
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        finally:
            if self._dropped_bytes:
                ms = self._dropped_bytes * 1000 // (self._sample_rate * 2)
                log.warning("Dropped %d ms of caller audio while disconnected", ms)
            self._put_nowait_end()

    def _put_nowait_end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    async def _connect_once(self, *, reconnecting: bool) -> None:
        provider = self._provider
        options = provider.connect_options(self._sample_rate)
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(provider.connect_timeout_s):
                    connection = await stack.enter_async_context(
                        provider._client.listen.v1.connect(**options)
                    )
            except ApiError as exc:
                status = exc.status_code
                retryable = status is None or status == 429 or status >= 500
                raise ProviderError(
                    _PROVIDER,
                    f"handshake refused (HTTP {status})",
                    retryable=retryable,
                    status=status,
                ) from exc
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                raise ProviderError(_PROVIDER, f"cannot connect: {exc!r}", retryable=True) from exc
            self.connections += 1
            log.info(
                "Connected (model=%s, %d Hz%s)",
                provider.model,
                self._sample_rate,
                ", reconnected" if reconnecting else "",
            )
            if reconnecting:
                await self._events.put(STTEvent(STTEventKind.RECONNECTED))
            await self._pump(connection)

    async def _pump(self, connection: Any) -> None:
        sender = asyncio.create_task(self._send_loop(connection), name="deepgram-send")
        try:
            await self._receive_loop(connection)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        if not self._closing:
            raise _Reconnect("server closed the stream")

    async def _receive_loop(self, connection: Any) -> None:
        try:
            async for message in connection:
                event = event_from_message(message)
                if event is None:
                    if getattr(message, "type", None) == "Metadata":
                        log.debug("Stream metadata received")
                    continue
                if event.kind is STTEventKind.FINAL and event.text:
                    log.info('Transcript (final) | text="%s"', event.text)
                elif event.kind is STTEventKind.INTERIM:
                    log.debug('Transcript (interim) | text="%s"', event.text)
                await self._events.put(event)
        except ConnectionClosed as exc:
            if self._closing:
                return
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            raise _Reconnect(f"closed {code} {reason}".strip()) from exc

    async def _send_loop(self, connection: Any) -> None:
        keepalive_s = self._provider.keepalive_s
        last_sent = time.monotonic()
        while True:
            if not self._pending and not self._closing:
                self._wakeup.clear()
                timeout = max(0.0, keepalive_s - (time.monotonic() - last_sent))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
            while self._pending:
                frame = self._pending[0]
                await connection.send_media(frame)
                # Only forget a frame once it is on the wire, so a drop loses none.
                self._pending.popleft()
                self._pending_bytes -= len(frame)
                last_sent = time.monotonic()
            if self._closing:
                await connection.send_close_stream()
                log.info("CloseStream sent")
                return  # the receive loop ends when Deepgram closes after its last results
            if time.monotonic() - last_sent >= keepalive_s:
                await connection.send_keep_alive()
                last_sent = time.monotonic()
                log.debug("KeepAlive sent")
