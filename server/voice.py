"""The ``/voice`` WebSocket: one Knowlarity Stream Node call.

This is the transport edge: admission (token, IP, MAX_CALLS, drain), the metadata frame,
then the call: a :class:`~server.knowlarity_line.KnowlarityLine` over the socket, served
by a :class:`~pipeline.call.session.CallSession`, which knows nothing of frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import lru_cache

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from config.settings import SUPPORTED_SAMPLE_RATES, Settings
from pipeline.call.session import CallSession
from pipeline.call_record import CallRecord
from server.knowlarity_line import CloseStream, KnowlarityLine, check_size, log_closed
from server.security import Network, client_ip, ip_allowed, parse_networks, tokens_match
from server.state import AppState
from wire.knowlarity import (
    CallMetadata,
    MetadataError,
    describe_frame,
    generated_metadata,
    parse_metadata,
)

log = get_logger("KNOWLARITY")

METADATA_TIMEOUT_S = 2.0
BUSY_RETRY_AFTER_S = 5  # Retry-After of the 503 for MAX_CALLS and drain refusals
# Close codes (RFC 6455 section 7.4.1) this edge uses before a call starts.
CLOSE_POLICY = 1008  # before accept, uvicorn turns it into an HTTP 403
CLOSE_TRY_LATER = 1013  # before accept on a server without the denial-response extension


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


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused: 403 (who is calling) or 503 (we cannot take it now)."""

    status: int
    reason: str


async def handle_call(websocket: WebSocket, state: AppState, path_token: str | None = None) -> None:
    """One ``/voice`` connection: admission, then the call (``path_token`` from /voice/{t})."""
    refusal = admission_refusal(websocket, state, path_token)
    calls = state.lifecycle.calls
    if refusal is None and not calls.try_admit(state.settings.stream.max_calls):
        refusal = Refusal(
            503, f"at MAX_CALLS ({state.settings.stream.max_calls} calls in progress)"
        )
    if refusal is not None:
        await _refuse(websocket, refusal)
        return
    try:
        await _serve_call(websocket, state)
    finally:
        calls.release()


def admission_refusal(
    websocket: WebSocket, state: AppState, path_token: str | None
) -> Refusal | None:
    """The handshake checks, cheapest first; nothing here may log the token."""
    settings = state.settings
    if state.lifecycle.draining:
        return Refusal(503, "the server is shutting down")
    expected = settings.stream.voice_ws_token
    if expected is not None and settings.stream.auth_configured:
        given = path_token if path_token is not None else websocket.query_params.get("token")
        if not tokens_match(given, expected.get_secret_value().strip()):
            return Refusal(403, "missing or wrong stream token")
    if settings.stream.voice_allowed_ips:
        ip = _client_ip(websocket, settings)
        if not ip_allowed(ip, _networks(settings.stream.voice_allowed_ips)):
            return Refusal(403, f"address {ip or 'unknown'} is not in VOICE_ALLOWED_IPS")
    return None


@lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def _client_ip(websocket: WebSocket, settings: Settings) -> str | None:
    peer = websocket.client.host if websocket.client is not None else None
    forwarded = websocket.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded, _networks(settings.stream.trusted_proxies))


class UvicornNoiseFilter(logging.Filter):
    """Quiets two uvicorn (websockets-sansio) log lines that any client can trigger.

    - After every denial response (our 503) it logs "ASGI callable returned without
      completing handshake." at ERROR, as it never marks such a handshake complete
      (uvicorn PR #3138); that would trip error alerting. Only the line directly after
      one of our denials is dropped: uvicorn logs it as our handler returns, before the
      loop runs anything else.
    - A text frame with invalid UTF-8 is logged with a full traceback before uvicorn
      closes with 1007. It is the client's bad bytes, not a server fault: the line stays,
      as a warning without the traceback (our handler logs the 1007 under the call id).
    """

    _DENIAL = "ASGI callable returned without completing handshake."
    _BAD_UTF8 = "Invalid UTF-8 sequence received from client."

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        asyncio.get_running_loop().call_soon(self._disarm)

    def _disarm(self) -> None:
        self.armed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self._BAD_UTF8:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif self.armed and record.msg == self._DENIAL:
            self.armed = False
            return False
        return True


uvicorn_noise_filter = UvicornNoiseFilter()


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    """Refuse before accepting: the Stream Node gets an HTTP status, never a stream."""
    peer = websocket.client.host if websocket.client is not None else "unknown"
    log.warning(
        "Refused a /voice handshake from %s: HTTP %d, %s", peer, refusal.status, refusal.reason
    )
    if refusal.status == 403:
        await websocket.close(code=CLOSE_POLICY)
        return
    response = PlainTextResponse(
        refusal.reason, refusal.status, headers={"Retry-After": str(BUSY_RETRY_AFTER_S)}
    )
    try:
        await websocket.send_denial_response(response)
        uvicorn_noise_filter.arm()
    except RuntimeError:  # the server lacks the extension: it answers 403 to this instead
        await websocket.close(code=CLOSE_TRY_LATER)


async def _serve_call(websocket: WebSocket, state: AppState) -> None:
    rate = call_sample_rate(
        websocket.query_params.get("sample_rate"), state.settings.stream.sample_rate
    )
    await websocket.accept()
    context = call_id_var.set("-")
    record: CallRecord | None = None
    try:
        metadata, early_audio = await _read_metadata(websocket, state.settings)
        call_id_var.set(metadata.call_id)
        _log_metadata(metadata, rate)
        missing = state.missing()
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
        line = KnowlarityLine(
            websocket,
            sample_rate=rate,
            chunk_ms=state.settings.stream.audio_chunk_ms,
            max_frame_bytes=state.settings.stream.max_frame_bytes,
            early_audio=early_audio,
        )
        session = CallSession(
            record=record,
            config=state.agent,
            providers=state.providers,
            line=line,
            events=state.events,
            language=state.settings.deepgram.language,
        )
        try:
            with state.lifecycle.calls.session(metadata.call_id, session):
                await session.run()
        finally:
            await line.aclose()
    except WebSocketDisconnect as exc:
        log_closed(exc.code, started=False)
    except CloseStream as exc:
        log.warning("Closing the stream with %d: %s", exc.code, exc.reason)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(exc.code, exc.reason)
    finally:
        if record is not None:
            state.registry.finish(record.call_id)
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close()
        call_id_var.reset(context)


async def _read_metadata(
    websocket: WebSocket, settings: Settings
) -> tuple[CallMetadata, bytes | None]:
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


def _log_metadata(metadata: CallMetadata, rate: int) -> None:
    log.info("callid = %s", metadata.call_id)
    log.info("virtual_number = %s", metadata.virtual_number)
    log.info("customer_number = %s", metadata.customer_number)
    log.info("call_type = %s", metadata.call_type)
    log.info("sample_rate = %d", rate)
