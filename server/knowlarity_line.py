"""The Knowlarity Stream Node line: the call core's line port over one ``/voice`` socket.

Outbound, each ``play`` becomes one ``playAudio`` frame (a WAV at the call's rate, base64
in JSON, ``AUDIO_CHUNK_MS`` long: 100 ms by default), ``clear`` a ``killAudio``,
``transfer`` and ``hang_up`` the ``transfer`` and ``disconnect`` frames. Inbound, binary
frames become aligned PCM until the Stream Node closes the socket (the hang-up), within
the call's real-time budget (:class:`~server.audio_meter.AudioMeter`: what a caller sends
faster than real time is dropped, with one line per call); a stray byte of a corrupt
odd-length frame is dropped (one line per call); text frames after the metadata are
logged and ignored. The frames themselves are built in
:mod:`wire.knowlarity`; this module only moves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, Protocol

from starlette.websockets import WebSocketDisconnect

from audio.wav import pcm_to_wav
from config.logs import get_logger
from server.audio_meter import AudioMeter
from wire.knowlarity import (
    FrameAligner,
    MetadataError,
    describe_frame,
    disconnect,
    kill_audio,
    parse_metadata,
    play_audio_wav,
    transfer,
)

log = get_logger("KNOWLARITY")

LOGGED_TEXT_FRAMES = 3  # text frames after metadata: log the first few, then every 100th
# After we send `disconnect` the Stream Node should close; a peer that does not would hold
# its MAX_CALLS slot for ever, so we close the stream ourselves after this long.
DISCONNECT_GRACE_S = 5.0

CLOSE_TOO_BIG = 1009
_CLOSE_MEANING = {
    1001: "going away",
    1007: "invalid UTF-8 in a text frame",
    1009: "message too big",
    1011: "server error",
    1012: "server restarting",
}
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class StreamSocket(Protocol):
    """What the line needs of the WebSocket (Starlette's ``WebSocket`` is one)."""

    async def send_text(self, data: str) -> None: ...

    async def receive(self) -> MutableMapping[str, Any]: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class CloseStream(Exception):
    """Close the stream with ``code`` (a frame we must refuse)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_size(message: MutableMapping[str, Any], limit: int) -> None:
    """The app's own MAX_FRAME_BYTES check, for servers started without --ws-max-size.

    With ``voice-agent serve`` the WebSocket layer already closed such a frame with 1009
    after reading only its header; here it has been buffered, but goes no further.
    """
    data = message.get("bytes")
    size = len(data) if data is not None else len(message.get("text") or "")
    if size > limit:
        raise CloseStream(CLOSE_TOO_BIG, f"frame of {size} bytes > MAX_FRAME_BYTES ({limit})")


class KnowlarityLine:
    """One call's Stream Node socket as a :class:`pipeline.line.LinePort`."""

    def __init__(
        self,
        websocket: StreamSocket,
        *,
        sample_rate: int,
        chunk_ms: int,
        max_frame_bytes: int,
        early_audio: bytes | None = None,
        meter: AudioMeter | None = None,
    ) -> None:
        self._ws = websocket
        self._meter = meter
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self._max_frame_bytes = max_frame_bytes
        self._early_audio = early_audio
        self.closed = False  # the caller is gone: later frames are dropped quietly
        self.frames_sent = 0
        self._closer: asyncio.Task[None] | None = None

    # -- outbound -------------------------------------------------------------------------

    async def play(self, pcm: bytes) -> None:
        frame = play_audio_wav(pcm_to_wav(pcm, self.sample_rate))
        if await self._send(frame) and log.isEnabledFor(logging.DEBUG):
            log.debug("Chunk %d sent | frame=%d chars", self.frames_sent, len(frame))

    async def clear(self) -> None:
        await self._send(kill_audio())

    async def transfer(self, number: str) -> None:
        if await self._send(transfer(number)):
            log.info("transfer sent | destination=%s", number)

    async def hang_up(self) -> None:
        if await self._send(disconnect()):
            log.info("disconnect sent")
            if self._closer is None:
                self._closer = asyncio.create_task(
                    self._close_later(), name="close-after-disconnect"
                )

    async def _send(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            await self._ws.send_text(text)
        except _SEND_ERRORS as exc:
            self.closed = True
            log.info("Send failed, caller gone (%s)", type(exc).__name__)
            return False
        self.frames_sent += 1
        return True

    async def _close_later(self) -> None:
        await asyncio.sleep(DISCONNECT_GRACE_S)
        if self.closed:
            return
        log.warning(
            "Still connected %.0f s after disconnect; closing the stream", DISCONNECT_GRACE_S
        )
        self.closed = True
        with contextlib.suppress(*_SEND_ERRORS):
            await self._ws.close(1000, "disconnect sent")

    async def aclose(self) -> None:
        task, self._closer = self._closer, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    # -- inbound --------------------------------------------------------------------------

    def audio(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        """Aligned caller PCM until the caller hangs up (or sends a frame we must refuse)."""
        aligner = FrameAligner()
        packets = 0
        texts = 0
        stray_logged = False
        if self._early_audio:
            aligned = aligner.push(self._early_audio)
            if aligned and self._within_budget(aligned):
                yield aligned
        debug = log.isEnabledFor(logging.DEBUG)
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                log_closed(message.get("code", 1000), started=True)
                return
            try:
                check_size(message, self._max_frame_bytes)
            except CloseStream as exc:
                # Ends the audio like a hang-up, so the session winds down on its usual path.
                self.closed = True
                log.warning("Closing the stream with %d: %s", exc.code, exc.reason)
                with contextlib.suppress(*_SEND_ERRORS):
                    await self._ws.close(exc.code, exc.reason)
                return
            data = message.get("bytes")
            if data is not None:
                packets += 1
                if packets == 1 or debug:
                    log.info("Audio packet received | size=%d bytes", len(data))
                aligned = aligner.push(data)
                if aligner.dropped and not stray_logged:
                    stray_logged = True
                    log.warning(
                        "Dropped a stray byte: an odd-length frame was followed by a %d-byte "
                        "frame, so it was no split sample; the audio stays aligned",
                        len(data),
                    )
                if aligned and self._within_budget(aligned):
                    yield aligned
            elif message.get("text") is not None:
                texts += 1
                if texts <= LOGGED_TEXT_FRAMES or texts % 100 == 0:
                    _log_ignored_text(message["text"], texts)

    def _within_budget(self, aligned: bytes) -> bool:
        meter = self._meter
        if meter is None or meter.admit(len(aligned), time.monotonic()):
            return True
        if meter.dropped_frames == 1:  # one line per call
            log.warning(
                "Caller audio arrives faster than real time: dropping what exceeds real time "
                "plus a %.1f s burst (%.1f s of audio forwarded so far)",
                meter.burst_s,
                meter.seconds(meter.passed_bytes),
            )
        return False


def describe_close(code: int) -> str:
    meaning = _CLOSE_MEANING.get(code)
    return f"code {code}: {meaning}" if meaning else f"code {code}"


def log_closed(code: int, *, started: bool) -> None:
    when = "" if started else " before the call started"
    if code in (1007, 1009):  # the WebSocket layer refused a frame and closed the stream
        log.warning("Stream closed by the server%s (%s)", when, describe_close(code))
    else:
        log.info("Caller hung up%s (%s)", when, describe_close(code))


def _log_ignored_text(text: str, count: int) -> None:
    """The Stream Node sends only audio after metadata: say what was ignored, briefly."""
    try:
        second = parse_metadata(text)
    except MetadataError:
        log.warning("Ignoring text frame #%d after metadata: %s", count, describe_frame(text))
    else:
        log.warning(
            "Ignoring a second metadata frame (#%d, callid=%s); the call keeps its id",
            count,
            second.call_id,
        )
