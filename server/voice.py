"""The ``/voice`` WebSocket: one Knowlarity Stream Node call.

This is the transport edge: it reads the metadata frame, turns binary frames into
aligned PCM for the session, and sends the session's text frames. Everything about the
conversation itself lives in :mod:`pipeline.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from config.settings import SUPPORTED_SAMPLE_RATES, Settings
from pipeline.session import CallSession
from server.admission import (
    PendingStream,
    Refusal,
    admission_refusal,
    client_address,
    refuse,
)
from server.audio_meter import AudioMeter
from server.protocol import (
    CALL_ID_MAX_CHARS,
    CallMetadata,
    FrameAligner,
    MetadataError,
    describe_frame,
    disconnect,
    generated_metadata,
    parse_metadata,
)
from server.registry import CallRecord
from server.state import AppState

log = get_logger("KNOWLARITY")

METADATA_TIMEOUT_S = 2.0
LOGGED_TEXT_FRAMES = 3  # text frames after metadata: log the first few, then every 100th
# After we send `disconnect` the Stream Node should close; a peer that does not would hold
# its MAX_CALLS slot for ever, so we close the stream ourselves after this long.
DISCONNECT_GRACE_S = 5.0

# Close codes (RFC 6455 section 7.4.1) this edge uses.
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
_CLOSE_MEANING = {
    1001: "going away",
    1007: "invalid UTF-8 in a text frame",
    1009: "message too big",
    1011: "server error",
    1012: "server restarting",
}


# "16000", "16k", "16.0k", "44.1k": short, plain decimal; nothing float() alone would take
# ("inf", "nan", "1e400k", "1_6000").
_RATE = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,3}))?(k?)")


def call_sample_rate(query_value: str | None, default: int) -> int:
    """``?sample_rate=8000`` (or ``8k``) lets Stream Nodes at other rates share a server.

    Anything else (not a supported rate, not a number at all) is logged and ignored: the
    call goes on at the default rate, and no input can raise here.
    """
    if not query_value:
        return default
    match = _RATE.fullmatch(query_value.strip().lower())
    rate = 0
    if match is not None:
        whole, fraction, kilo = match.groups()
        value = int(whole) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
        value *= 1000 if kilo else 1
        rate = int(value) if math.isfinite(value) and value == int(value) else 0
    if rate not in SUPPORTED_SAMPLE_RATES:
        log.warning(
            "Ignoring sample_rate=%s (supported: %s); using %d",
            describe_frame(repr(query_value), 40),
            SUPPORTED_SAMPLE_RATES,
            default,
        )
        return default
    return rate


class _Outbound:
    """Sends text frames; once the caller is gone, later frames are dropped quietly."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self.closed = False
        self._closer: asyncio.Task[None] | None = None

    async def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self.closed = True
            log.info("Send failed, caller gone (%s)", type(exc).__name__)
            return
        if text == _DISCONNECT and self._closer is None:
            self._closer = asyncio.create_task(self._close_later(), name="close-after-disconnect")

    async def _close_later(self) -> None:
        await asyncio.sleep(DISCONNECT_GRACE_S)
        if self.closed:
            return
        log.warning(
            "Still connected %.0f s after disconnect; closing the stream", DISCONNECT_GRACE_S
        )
        self.closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._ws.close(1000, "disconnect sent")

    async def aclose(self) -> None:
        task, self._closer = self._closer, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})


_DISCONNECT = disconnect()


class _CloseStream(Exception):
    """Close an accepted stream with ``code`` (raised before a session exists)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _SilentStream(_CloseStream):
    """No frame at all after the handshake: not a Stream Node."""


async def handle_call(websocket: WebSocket, state: AppState, path_token: str | None = None) -> None:
    """One ``/voice`` connection: admission, then the call (``path_token`` from /voice/{t})."""
    ip = client_address(websocket, state.settings)
    refusal = admission_refusal(websocket, state, path_token, ip=ip)
    max_calls = state.settings.max_calls
    if refusal is None and state.lifecycle.calls.connections >= max_calls:
        refusal = Refusal(503, f"at MAX_CALLS ({max_calls} calls in progress)")
    if refusal is not None:
        await refuse(websocket, state, refusal, ip)
        return
    stream = PendingStream(state, ip)  # takes its MAX_CALLS slot with its first frame
    try:
        await _serve_call(websocket, state, stream)
    finally:
        stream.end()


async def _serve_call(websocket: WebSocket, state: AppState, pending: PendingStream) -> None:
    rate = call_sample_rate(websocket.query_params.get("sample_rate"), state.settings.sample_rate)
    await websocket.accept()
    context = call_id_var.set("-")
    record: CallRecord | None = None
    try:
        metadata, early_audio = await _read_metadata(websocket, state.settings, pending)
        call_id = _claim_call_id(state, metadata)
        _log_metadata(metadata, rate)
        missing = state.settings.missing_providers()
        if missing:
            log.error("Missing settings for a live call: %s", ", ".join(missing))
        record = state.registry.add(
            CallRecord(
                call_id=call_id,
                virtual_number=metadata.virtual_number,
                customer_number=metadata.customer_number,
                call_type=metadata.call_type,
                sample_rate=rate,
            )
        )
        outbound = _Outbound(websocket)
        session = CallSession(
            record=record,
            config=state.agent,
            providers=state.providers,
            send=outbound.send,
            sample_rate=rate,
        )
        frames = _audio_frames(
            websocket,
            early_audio,
            outbound,
            state.settings,
            AudioMeter(rate, state.settings.inbound_audio_burst_s, time.monotonic()),
        )
        try:
            with state.lifecycle.calls.session(call_id, session):
                await session.run(frames)
        finally:
            await outbound.aclose()
    except WebSocketDisconnect as exc:
        _log_closed(exc.code, started=False)
    except _CloseStream as exc:
        _log_close(state, pending, exc)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(exc.code, exc.reason)
    finally:
        if record is not None:
            state.registry.finish(record.call_id)
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close()
        call_id_var.reset(context)


def _log_close(state: AppState, pending: PendingStream, exc: _CloseStream) -> None:
    if not isinstance(exc, _SilentStream):
        log.warning("Closing the stream with %d: %s", exc.code, exc.reason)
        return
    # Anyone can open silent streams by the hundred: one line per address and minute, and
    # each is a strike (no Stream Node does this), so a flood gets its address banned.
    who = pending.ip or "unknown"
    now = time.monotonic()
    if state.ip_limits.strike(pending.ip, now):
        log.warning(
            "Banning %s for %.0f s: too many silent streams", who, state.ip_limits.config.ban_s
        )
    allowed, held = state.refusal_log.allow(f"{who}|silent", now)
    if allowed:
        more = f" (+{held} similar not logged)" if held else ""
        log.warning(
            "Closing a silent stream from %s with %d: %s%s", who, exc.code, exc.reason, more
        )


def _claim_call_id(state: AppState, metadata: CallMetadata) -> str:
    """The id this call runs under: the frame's, unless unsafe or already live here."""
    if metadata.refused_call_id:
        log.error(
            "Refused callid %s (allowed: letters, digits and ._:@+=-, at most %d); "
            "serving the call as %s",
            metadata.refused_call_id,
            CALL_ID_MAX_CHARS,
            metadata.call_id,
        )
    call_id = state.registry.unique_id(metadata.call_id)
    call_id_var.set(call_id)
    if call_id != metadata.call_id:
        # Two live calls must never share a record (or each other's CDRs and logs).
        log.warning(
            "callid %s is already live on this server; serving this call as %s",
            metadata.call_id,
            call_id,
        )
    return call_id


def _describe_close(code: int) -> str:
    meaning = _CLOSE_MEANING.get(code)
    return f"code {code}: {meaning}" if meaning else f"code {code}"


def _log_closed(code: int, *, started: bool) -> None:
    when = "" if started else " before the call started"
    if code in (1007, 1009):  # the WebSocket layer refused a frame and closed the stream
        log.warning("Stream closed by the server%s (%s)", when, _describe_close(code))
    else:
        log.info("Caller hung up%s (%s)", when, _describe_close(code))


async def _read_metadata(
    websocket: WebSocket, settings: Settings, pending: PendingStream
) -> tuple[CallMetadata, bytes | None]:
    """The first frame should be metadata; anything else must not cost the caller the call.

    Audio first, or a metadata frame we cannot use: the call is served under a generated
    id. No frame at all within METADATA_TIMEOUT_S: no Stream Node (it sends metadata at
    once, then audio all the time), so the stream is closed (1008) before it costs a
    speech-to-text stream and a MAX_CALLS slot; until then it counts as pending against
    its address, so idle sockets cannot pile up.
    """
    message = await _first_frame(websocket, pending)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if not pending.promote():  # calls filled up since the handshake (rare)
        raise _CloseStream(CLOSE_TRY_LATER, "at MAX_CALLS: try again later")
    _check_size(message, settings.max_frame_bytes)
    text = message.get("text")
    if text is None:
        metadata = generated_metadata()
        call_id_var.set(metadata.call_id)
        log.error("Audio arrived before metadata; serving the call as %s", metadata.call_id)
        return metadata, message.get("bytes")
    try:
        return parse_metadata(text, max_bytes=settings.max_metadata_bytes), None
    except MetadataError as exc:
        metadata = generated_metadata()
        call_id_var.set(metadata.call_id)
        log.error(
            "Failed to parse metadata (%s): %s; serving the call as %s",
            exc,
            describe_frame(text),
            metadata.call_id,
        )
        return metadata, None


async def _first_frame(websocket: WebSocket, pending: PendingStream) -> Message:
    """The first message, unless METADATA_TIMEOUT_S passes or the pending pool evicts us."""
    receiving = asyncio.ensure_future(websocket.receive())
    evicted = asyncio.ensure_future(pending.evicted.wait())
    try:
        await asyncio.wait(
            {receiving, evicted}, timeout=METADATA_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (receiving, evicted):
            if not task.done():
                task.cancel()
        await asyncio.wait({receiving, evicted})
    if receiving.done() and not receiving.cancelled():
        return receiving.result()
    if evicted.done() and not evicted.cancelled():
        reason = "no frame yet, and the oldest of too many silent streams"
    else:
        reason = f"no frame within {METADATA_TIMEOUT_S:.0f} s of the handshake"
    raise _SilentStream(CLOSE_POLICY, reason)


def _check_size(message: Message, limit: int) -> None:
    """The app's own MAX_FRAME_BYTES check, for servers started without --ws-max-size.

    With ``voice-agent serve`` the WebSocket layer already closed such a frame with 1009
    after reading only its header; here it has been buffered, but goes no further.
    """
    data = message.get("bytes")
    size = len(data) if data is not None else len(message.get("text") or "")
    if size > limit:
        raise _CloseStream(CLOSE_TOO_BIG, f"frame of {size} bytes > MAX_FRAME_BYTES ({limit})")


def _log_metadata(metadata: CallMetadata, rate: int) -> None:
    log.info("callid = %s", metadata.call_id)
    log.info("virtual_number = %s", metadata.virtual_number)
    log.info("customer_number = %s", metadata.customer_number)
    log.info("call_type = %s", metadata.call_type)
    log.info("sample_rate = %d", rate)


async def _audio_frames(
    websocket: WebSocket,
    early_audio: bytes | None,
    outbound: _Outbound,
    settings: Settings,
    meter: AudioMeter,
) -> AsyncIterator[bytes]:
    """Aligned caller PCM, within the real-time budget, until the caller hangs up (or
    sends a frame we must refuse)."""
    aligner = FrameAligner()
    packets = 0
    texts = 0
    stray_logged = False
    if early_audio:
        aligned = aligner.push(early_audio)
        if aligned and _within_budget(meter, aligned):
            yield aligned
    debug = log.isEnabledFor(logging.DEBUG)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            outbound.closed = True
            _log_closed(message.get("code", 1000), started=True)
            return
        try:
            _check_size(message, settings.max_frame_bytes)
        except _CloseStream as exc:
            # Ends the audio like a hang-up, so the session winds down on its usual path.
            outbound.closed = True
            log.warning("Closing the stream with %d: %s", exc.code, exc.reason)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close(exc.code, exc.reason)
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
            if aligned and _within_budget(meter, aligned):
                yield aligned
        elif message.get("text") is not None:
            texts += 1
            if texts <= LOGGED_TEXT_FRAMES or texts % 100 == 0:
                _log_ignored_text(message["text"], texts)


def _within_budget(meter: AudioMeter, aligned: bytes) -> bool:
    if meter.admit(len(aligned), time.monotonic()):
        return True
    if meter.dropped_frames == 1:  # one line per call
        log.warning(
            "Caller audio arrives faster than real time: dropping what exceeds real time "
            "plus a %.1f s burst (%.1f s of audio forwarded so far)",
            meter.burst_s,
            meter.seconds(meter.passed_bytes),
        )
    return False


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
