"""The ``/voice`` WebSocket: one Knowlarity Stream Node call.

This is the transport edge: admission (:mod:`server.admission`: drain, per-address
limits, token, IP, MAX_CALLS), the metadata frame, then the call: a
:class:`~server.knowlarity_line.KnowlarityLine` over the socket, served by a
:class:`~pipeline.call.session.CallSession`, which knows nothing of frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from config.settings import SUPPORTED_SAMPLE_RATES, Settings
from pipeline.call.session import CallSession
from pipeline.call_record import CallRecord
from server.admission import (
    PendingStream,
    Refusal,
    admission_refusal,
    client_address,
    refuse,
)
from server.audio_meter import AudioMeter
from server.knowlarity_line import CloseStream, KnowlarityLine, check_size, log_closed
from server.state import AppState
from wire.knowlarity import (
    CALL_ID_MAX_CHARS,
    CallMetadata,
    MetadataError,
    describe_frame,
    generated_metadata,
    parse_metadata,
)

log = get_logger("KNOWLARITY")

METADATA_TIMEOUT_S = 2.0
# Close codes (RFC 6455 section 7.4.1) this edge uses before a call starts.
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013

# "16000", "16k", "16.0k", "44.1k": short, plain decimal; nothing float() alone would take
# ("inf", "nan", "1e400k", "1_6000", other scripts' digits).
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


class _SilentStream(CloseStream):
    """No frame at all after the handshake: not a Stream Node."""


async def handle_call(websocket: WebSocket, state: AppState, path_token: str | None = None) -> None:
    """One ``/voice`` connection: admission, then the call (``path_token`` from /voice/{t})."""
    ip = client_address(websocket, state.settings.stream)
    refusal = admission_refusal(websocket, state, path_token, ip=ip)
    max_calls = state.settings.stream.max_calls
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
    stream = state.settings.stream
    rate = call_sample_rate(websocket.query_params.get("sample_rate"), stream.sample_rate)
    await websocket.accept()
    context = call_id_var.set("-")
    record: CallRecord | None = None
    try:
        metadata, early_audio = await _read_metadata(websocket, state.settings, pending)
        call_id = _claim_call_id(state, metadata)
        _log_metadata(metadata, rate)
        missing = state.missing()
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
        line = KnowlarityLine(
            websocket,
            sample_rate=rate,
            chunk_ms=state.settings.stream.audio_chunk_ms,
            max_frame_bytes=state.settings.stream.max_frame_bytes,
            early_audio=early_audio,
            meter=AudioMeter(rate, stream.inbound_audio_burst_s, time.monotonic()),
        )
        setup = state.setup_for(websocket.query_params.get("lang"))
        if setup.language.code != state.settings.hindi.default_language:
            log.info("language = %s", setup.language.code)
        session = CallSession(
            record=record,
            config=setup.agent,
            providers=setup.providers,
            line=line,
            events=state.events,
            language=setup.language.stt_language or state.settings.deepgram.language,
            turn_taking=state.turn_taking,
            vad=state.vad,
        )
        try:
            with state.lifecycle.calls.session(call_id, session):
                await session.run()
        finally:
            await line.aclose()
    except WebSocketDisconnect as exc:
        log_closed(exc.code, started=False)
    except CloseStream as exc:
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


def _log_close(state: AppState, pending: PendingStream, exc: CloseStream) -> None:
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
        raise CloseStream(CLOSE_TRY_LATER, "at MAX_CALLS: try again later")
    check_size(message, settings.stream.max_frame_bytes)
    text = message.get("text")
    if text is None:
        metadata = generated_metadata()
        call_id_var.set(metadata.call_id)
        log.error("Audio arrived before metadata; serving the call as %s", metadata.call_id)
        return metadata, message.get("bytes")
    try:
        return parse_metadata(text, max_bytes=settings.stream.max_metadata_bytes), None
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


async def _first_frame(websocket: WebSocket, pending: PendingStream) -> MutableMapping[str, Any]:
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


def _log_metadata(metadata: CallMetadata, rate: int) -> None:
    log.info("callid = %s", metadata.call_id)
    log.info("virtual_number = %s", metadata.virtual_number)
    log.info("customer_number = %s", metadata.customer_number)
    log.info("call_type = %s", metadata.call_type)
    log.info("sample_rate = %d", rate)
