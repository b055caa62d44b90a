"""The ``/voice`` WebSocket: one Knowlarity Stream Node call.

This is the transport edge: it reads the metadata frame, turns binary frames into
aligned PCM for the session, and sends the session's text frames. Everything about the
conversation itself lives in :mod:`pipeline.session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from config.settings import SUPPORTED_SAMPLE_RATES
from pipeline.session import CallSession
from server.protocol import (
    CallMetadata,
    FrameAligner,
    MetadataError,
    describe_frame,
    generated_metadata,
    parse_metadata,
)
from server.registry import CallRecord
from server.state import AppState

log = get_logger("KNOWLARITY")

METADATA_TIMEOUT_S = 2.0


def call_sample_rate(query_value: str | None, default: int) -> int:
    """``?sample_rate=8000`` (or ``8k``) lets Stream Nodes at other rates share a server."""
    if not query_value:
        return default
    text = query_value.strip().lower()
    try:
        rate = int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
    except ValueError:
        rate = 0
    if rate not in SUPPORTED_SAMPLE_RATES:
        log.warning(
            "Ignoring sample_rate=%r (supported: %s); using %d",
            query_value,
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

    async def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self.closed = True
            log.info("Send failed, caller gone (%s)", type(exc).__name__)


async def handle_call(websocket: WebSocket, state: AppState) -> None:
    rate = call_sample_rate(websocket.query_params.get("sample_rate"), state.settings.sample_rate)
    await websocket.accept()
    context = call_id_var.set("-")
    record: CallRecord | None = None
    try:
        metadata, early_audio = await _read_metadata(websocket)
        call_id_var.set(metadata.call_id)
        _log_metadata(metadata, rate)
        missing = state.settings.missing_providers()
        if missing:
            log.error("Missing settings for a live call: %s", ", ".join(missing))
        record = state.registry.add(
            CallRecord(
                call_id=metadata.call_id,
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
        await session.run(_audio_frames(websocket, early_audio, outbound))
    except WebSocketDisconnect:
        log.info("Caller hung up before the call started")
    finally:
        if record is not None:
            state.registry.finish(record.call_id)
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close()
        call_id_var.reset(context)


async def _read_metadata(websocket: WebSocket) -> tuple[CallMetadata, bytes | None]:
    """The first frame should be metadata; anything else must not cost the caller the call."""
    try:
        message = await asyncio.wait_for(websocket.receive(), METADATA_TIMEOUT_S)
    except TimeoutError:
        metadata = generated_metadata()
        call_id_var.set(metadata.call_id)
        log.error(
            "No metadata frame within %.0f s; serving the call as %s",
            METADATA_TIMEOUT_S,
            metadata.call_id,
        )
        return metadata, None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        metadata = generated_metadata()
        call_id_var.set(metadata.call_id)
        log.error("Audio arrived before metadata; serving the call as %s", metadata.call_id)
        return metadata, message.get("bytes")
    try:
        return parse_metadata(text), None
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


def _log_metadata(metadata: CallMetadata, rate: int) -> None:
    log.info("callid = %s", metadata.call_id)
    log.info("virtual_number = %s", metadata.virtual_number)
    log.info("customer_number = %s", metadata.customer_number)
    log.info("call_type = %s", metadata.call_type)
    log.info("sample_rate = %d", rate)


async def _audio_frames(
    websocket: WebSocket, early_audio: bytes | None, outbound: _Outbound
) -> AsyncIterator[bytes]:
    aligner = FrameAligner()
    packets = 0
    if early_audio:
        aligned = aligner.push(early_audio)
        if aligned:
            yield aligned
    debug = log.isEnabledFor(logging.DEBUG)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            outbound.closed = True
            log.info("Caller hung up (code %s)", message.get("code", 1000))
            return
        data = message.get("bytes")
        if data is not None:
            packets += 1
            if packets == 1 or debug:
                log.info("Audio packet received | size=%d bytes", len(data))
            aligned = aligner.push(data)
            if aligned:
                yield aligned
        elif message.get("text") is not None:
            log.warning("Ignoring text frame after metadata: %s", describe_frame(message["text"]))
