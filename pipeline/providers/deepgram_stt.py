"""Deepgram live speech-to-text through deepgram-sdk v7.

v7 has neither automatic KeepAlive nor reconnect, so this module owns both: it sends
``{"type":"KeepAlive"}`` whenever no audio has gone out for ``keepalive_s`` (never an empty
binary frame, which Deepgram reads as end of stream), and when the socket drops mid-call
it reconnects while holding the caller's audio in a bounded buffer.

A socket can also die silently: audio goes out, nothing comes back. Once the caller has
spoken for a while and no message of any kind arrived for ``stall_timeout_s``, the stream
is treated as dead: it reconnects and replays the unanswered speech on the new socket.

(Over 400 lines on purpose: the send loop, the receive loop, keep-alive, the stall watch
and the reconnect share one socket's state and are only correct together.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import numpy as np
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from config.logs import get_logger
from config.settings import DeepgramSettings
from pipeline.aio import Closing
from pipeline.providers.base import ProviderError, STTEvent, STTEventKind, status_error
from pipeline.retry import RetryPolicy, time_limit

log = get_logger("DEEPGRAM")

_PROVIDER = "deepgram"
SPEECH_RMS = 500.0  # int16 RMS (~-36 dBFS): above line noise, below any spoken word
SEND_BATCH_MS = 40  # audio per message to Deepgram (the caller's frames are 20 ms)
FLUSH_AFTER_S = 0.1  # a partial batch goes out anyway after this (caller audio paused)
# This long past Deepgram's own utterance-end gap after the caller's last loud frame, the
# quiet goes in the stall watch's 100-200 ms batches (Deepgram takes 20-250 ms) instead of
# 40 ms ones: a third of the sends while the bot talks or the caller listens. Everything
# Deepgram needs to end an utterance still goes at 40 ms; the next loud frame goes at once.
QUIET_BATCH_AFTER_MS = 500  # (past utterance_end_ms)
MIN_UNANSWERED_SPEECH_S = 0.5  # a cough or click alone does not arm the stall check
# Reconnects: 0.1 s, doubling, at most 2 s apart; DEEPGRAM_MAX_OUTAGE_S ends the tries.
RECONNECT = RetryPolicy(base_s=0.1, cap_s=2.0)


_SPEECH_ENERGY = SPEECH_RMS * SPEECH_RMS


def is_speech(pcm: bytes) -> bool:
    """Whether a frame is loud enough that a live recogniser must react to it."""
    n = len(pcm) // 2
    if n == 0:
        return False
    samples = np.frombuffer(pcm, dtype="<i2", count=n).astype(np.float32)
    return float(np.dot(samples, samples)) >= _SPEECH_ENERGY * n  # RMS², no sqrt: 2x faster


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

    def __init__(self, settings: DeepgramSettings, *, max_buffer_s: float = 10.0) -> None:
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        self._client = AsyncDeepgramClient(
            api_key=api_key, environment=environment_for(settings.base_url)
        )
        self.settings = settings
        self.model = settings.model
        self.max_buffer_s = max_buffer_s  # caller audio held while reconnecting

    def stream(self, sample_rate: int) -> DeepgramStream:
        return DeepgramStream(self, sample_rate)

    async def aclose(self) -> None:
        """Nothing process-wide to release: each call's stream closes its own socket."""

    def connect_options(self, sample_rate: int) -> dict[str, Any]:
        settings = self.settings
        return {
            "model": settings.model,
            "language": settings.language,
            "encoding": "linear16",
            "sample_rate": sample_rate,
            "channels": 1,
            "interim_results": "true",
            "endpointing": settings.endpointing_ms,
            "utterance_end_ms": settings.utterance_end_ms,
            "vad_events": "true",
            "smart_format": "true",
            "punctuate": "true",
        }


class _Reconnect(Exception):
    """The socket ended (or went silent) while the call still needs it."""


class SendPacing:
    """Whether queued caller audio must go to Deepgram now, or can wait for the stall
    watch's flush of a stale partial batch (every 100-200 ms).

    While the caller speaks, and for ``long_quiet_bytes`` after (what Deepgram needs to
    end the utterance), audio goes in ``batch_bytes`` batches. Past that the quiet waits
    for the flush, and the first loud frame after it goes at once.
    """

    def __init__(self, batch_bytes: int, long_quiet_bytes: int) -> None:
        self._batch_bytes = batch_bytes
        self._long_quiet_bytes = long_quiet_bytes
        self._quiet_bytes = long_quiet_bytes  # a call starts quiet (greeting playing)

    def long_quiet(self) -> bool:
        return self._quiet_bytes >= self._long_quiet_bytes

    def send_now(self, frame: bytes, pending_bytes: int) -> bool:
        """``frame`` was just queued (``pending_bytes`` queued in all): wake the sender?"""
        if is_speech(frame):
            resumed = self.long_quiet()
            self._quiet_bytes = 0
            if resumed:
                return True
        elif not self.long_quiet():
            self._quiet_bytes += len(frame)
        return pending_bytes >= self._batch_bytes and not self.long_quiet()


class _Unanswered:
    """Speech sent on this socket since the last message from Deepgram.

    Kept (newest ``max_bytes`` only) so a stalled socket's audio can be replayed on the
    next one: nothing of it was transcribed, or some message would have come back.
    """

    def __init__(self, max_bytes: int, arm_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._arm_bytes = arm_bytes  # this much speech unanswered arms the stall check
        self.frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self.since: float | None = None  # when the first unanswered speech frame went out
        self.speech_bytes = 0

    def sent(self, frame: bytes, now: float) -> None:
        if self.speech_bytes < self._arm_bytes and is_speech(frame):  # once armed, stop looking
            if self.since is None:
                self.since = now
            self.speech_bytes += len(frame)
        if self.since is None:
            return
        self.frames.append(frame)
        self._bytes += len(frame)
        while self._bytes > self._max_bytes:
            self._bytes -= len(self.frames.popleft())

    def answered(self) -> None:
        self.frames = collections.deque()  # a new deque: a replay may still hold the old one
        self._bytes = 0
        self.since = None
        self.speech_bytes = 0

    def stalled_at(self, stall_s: float) -> float | None:
        """When the socket counts as dead if nothing arrives; None while not armed."""
        if self.since is None or self.speech_bytes < self._arm_bytes:
            return None
        return self.since + stall_s


class DeepgramStream(Closing):
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
        self._unanswered = _Unanswered(
            self._max_buffer_bytes, int(MIN_UNANSWERED_SPEECH_S * sample_rate * 2)
        )
        self._down_since: float | None = None  # first failure since the last message
        self._bytes_per_s = sample_rate * 2
        self._last_sent = time.monotonic()
        self._flush_due = False  # set by the stall watch: keepalive or stale partial batch
        # Frames go to Deepgram in batches: half the sends (and wakeups) of 20 ms frames.
        self._batch_bytes = sample_rate * 2 * SEND_BATCH_MS // 1000
        quiet_ms = provider.settings.utterance_end_ms + QUIET_BATCH_AFTER_MS
        self._pacing = SendPacing(self._batch_bytes, sample_rate * 2 * quiet_ms // 1000)
        self.connections = 0
        self.messages = 0  # audio messages sent (all sockets)
        self.failure: ProviderError | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="deepgram-stream")
        return self

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
        if self._pacing.send_now(pcm, self._pending_bytes):
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
                if self._outage_over_limit():
                    return
                await asyncio.sleep(RECONNECT.backoff(attempt))
        finally:
            if self._dropped_bytes:
                ms = self._dropped_bytes * 1000 // (self._sample_rate * 2)
                log.warning("Dropped %d ms of caller audio while disconnected", ms)
            self._put_nowait_end()

    def _outage_over_limit(self) -> bool:
        """Whether Deepgram has said nothing through failures for too long to keep trying.

        The clock starts at the first failure and stops at the next message received,
        so flapping sockets that still transcribe never add up to an outage.
        """
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        limit = self._provider.settings.max_outage_s
        if now - self._down_since < limit:
            return False
        self.failure = ProviderError(_PROVIDER, f"no transcripts for {limit:g} s", retryable=True)
        log.error("Stream failed: %s; giving up", self.failure.message)
        return True

    def _put_nowait_end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    async def _connect_once(self, *, reconnecting: bool) -> None:
        provider = self._provider
        options = provider.connect_options(self._sample_rate)
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with time_limit(provider.settings.connect_timeout_s, _PROVIDER, "connect"):
                    connection = await stack.enter_async_context(
                        provider._client.listen.v1.connect(**options)
                    )
            except ApiError as exc:
                raise status_error(_PROVIDER, exc.status_code, "handshake refused") from exc
            except (OSError, InvalidHandshake) as exc:
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
        self._unanswered.answered()
        sender = asyncio.create_task(self._send_loop(connection), name="deepgram-send")
        watch = asyncio.create_task(self._watch_stall(), name="deepgram-stall-watch")
        receiver = asyncio.create_task(self._receive_loop(connection), name="deepgram-recv")
        try:
            await asyncio.wait({receiver, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            received_error = await _stop(receiver)
            await _stop(watch)
            send_error = await _stop(sender)
            if not self._closing:
                self._replay_unanswered()
        if received_error is not None:
            raise received_error  # a close (1011...) says more than a stall
        if send_error is not None and not isinstance(send_error, ConnectionClosed):
            raise send_error
        if watch.done() and not watch.cancelled():
            raise _Reconnect(watch.result())
        if not self._closing:
            raise _Reconnect("server closed the stream")

    async def _watch_stall(self) -> str:
        """Return (a reason) once speech went out and nothing came back for too long."""
        stall_s = self._provider.settings.stall_timeout_s
        while True:
            due = self._unanswered.stalled_at(stall_s)
            now = time.monotonic()
            idle = now - self._last_sent
            if not self._flush_due and (
                idle >= self._provider.settings.keepalive_s
                or (self._pending and idle >= FLUSH_AFTER_S)
            ):
                self._flush_due = True
                self._wakeup.set()
            if due is not None and now >= due and not self._closing:
                return f"no message for {stall_s:g} s while the caller spoke (stalled)"
            await asyncio.sleep(0.1 if due is None else max(0.01, due - now))

    def _replay_unanswered(self) -> None:
        """Put the speech the dead socket swallowed back in front of the queue."""
        frames = self._unanswered.frames
        self._unanswered.answered()
        replay = b"".join(frames)
        if replay:
            self._pending.appendleft(replay)
            self._pending_bytes += len(replay)
            log.warning(
                "Replaying %d ms of unanswered speech", len(replay) * 1000 // self._bytes_per_s
            )

    async def _receive_loop(self, connection: Any) -> None:
        try:
            async for message in connection:
                self._unanswered.answered()
                self._down_since = None
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
        # No timer per frame: the stall watch (awake every 100 ms anyway) sets _flush_due.
        keepalive_s = self._provider.settings.keepalive_s
        self._last_sent = time.monotonic()
        pending = self._pending
        while True:
            batch_short = self._pending_bytes < self._batch_bytes
            if batch_short and not self._closing and not self._flush_due:
                self._wakeup.clear()
                await self._wakeup.wait()
            while pending:
                batch = list(pending)  # send_audio may trim the deque while we await
                frame = batch[0] if len(batch) == 1 else b"".join(batch)
                await connection.send_media(frame)
                self.messages += 1
                # Only forget frames once they are on the wire, so a drop loses none.
                for sent in batch:
                    if pending and pending[0] is sent:
                        pending.popleft()
                        self._pending_bytes -= len(sent)
                self._last_sent = time.monotonic()
                self._unanswered.sent(frame, self._last_sent)
            self._flush_due = False
            if self._closing:
                await connection.send_close_stream()
                log.info("CloseStream sent | audio_messages=%d", self.messages)
                return  # the receive loop ends when Deepgram closes after its last results
            if time.monotonic() - self._last_sent >= keepalive_s:
                await connection.send_keep_alive()
                self._last_sent = time.monotonic()
                log.debug("KeepAlive sent")


async def _stop(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel a helper task, wait for it, and hand back what it failed with (if anything)."""
    task.cancel()
    await asyncio.wait({task})
    return None if task.cancelled() else task.exception()
