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
from dataclasses import dataclass
from functools import lru_cache

from starlette.responses import PlainTextResponse
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from config.settings import SUPPORTED_SAMPLE_RATES, Settings
from pipeline.session import CallSession
from server.protocol import (
    CallMetadata,
    FrameAligner,
    MetadataError,
    describe_frame,
    disconnect,
    generated_metadata,
    parse_metadata,
)
from server.registry import CallRecord
from server.security import Network, client_ip, ip_allowed, parse_networks, tokens_match
from server.state import AppState

log = get_logger("KNOWLARITY")

METADATA_TIMEOUT_S = 2.0
BUSY_RETRY_AFTER_S = 5  # Retry-After of the 503 for MAX_CALLS and drain refusals
LOGGED_TEXT_FRAMES = 3  # text frames after metadata: log the first few, then every 100th
# After we send `disconnect` the Stream Node should close; a peer that does not would hold
# its MAX_CALLS slot for ever, so we close the stream ourselves after this long.
DISCONNECT_GRACE_S = 5.0

# Close codes (RFC 6455 section 7.4.1) this edge uses.
CLOSE_POLICY = 1008  # before accept, uvicorn turns it into an HTTP 403
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013  # before accept on a server without the denial-response extension
_CLOSE_MEANING = {
    1001: "going away",
    1007: "invalid UTF-8 in a text frame",
    1009: "message too big",
    1011: "server error",
    1012: "server restarting",
}


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


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused: 403 (who is calling) or 503 (we cannot take it now)."""

    status: int
    reason: str


class _CloseStream(Exception):
    """Close an accepted stream with ``code`` (raised before a session exists)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def handle_call(websocket: WebSocket, state: AppState, path_token: str | None = None) -> None:
    """One ``/voice`` connection: admission, then the call (``path_token`` from /voice/{t})."""
    refusal = admission_refusal(websocket, state, path_token)
    calls = state.lifecycle.calls
    if refusal is None and not calls.try_admit(state.settings.max_calls):
        refusal = Refusal(503, f"at MAX_CALLS ({state.settings.max_calls} calls in progress)")
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
    expected = settings.voice_ws_token
    if expected is not None and settings.voice_auth_configured:
        given = path_token if path_token is not None else websocket.query_params.get("token")
        if not tokens_match(given, expected.get_secret_value().strip()):
            return Refusal(403, "missing or wrong stream token")
    if settings.voice_allowed_ips:
        ip = _client_ip(websocket, settings)
        if not ip_allowed(ip, _networks(settings.voice_allowed_ips)):
            return Refusal(403, f"address {ip or 'unknown'} is not in VOICE_ALLOWED_IPS")
    return None


@lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def _client_ip(websocket: WebSocket, settings: Settings) -> str | None:
    peer = websocket.client.host if websocket.client is not None else None
    forwarded = websocket.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded, _networks(settings.trusted_proxies))


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
    rate = call_sample_rate(websocket.query_params.get("sample_rate"), state.settings.sample_rate)
    await websocket.accept()
    context = call_id_var.set("-")
    record: CallRecord | None = None
    try:
        metadata, early_audio = await _read_metadata(websocket, state.settings)
        call_id_var.set(metadata.call_id)
        _log_metadata(metadata, rate)
        if state.choice is not None:
            for stage in state.choice.unavailable():
                log.error("No %s provider for this call: %s", stage.stage.upper(), stage.why)
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
            events=state.events,
            language=state.settings.deepgram_language,
        )
        frames = _audio_frames(websocket, early_audio, outbound, state.settings.max_frame_bytes)
        try:
            with state.lifecycle.calls.session(metadata.call_id, session):
                await session.run(frames)
        finally:
            await outbound.aclose()
    except WebSocketDisconnect as exc:
        _log_closed(exc.code, started=False)
    except _CloseStream as exc:
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
    websocket: WebSocket, early_audio: bytes | None, outbound: _Outbound, max_frame_bytes: int
) -> AsyncIterator[bytes]:
    """Aligned caller PCM until the caller hangs up (or sends a frame we must refuse)."""
    aligner = FrameAligner()
    packets = 0
    texts = 0
    if early_audio:
        aligned = aligner.push(early_audio)
        if aligned:
            yield aligned
    debug = log.isEnabledFor(logging.DEBUG)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            outbound.closed = True
            _log_closed(message.get("code", 1000), started=True)
            return
        try:
            _check_size(message, max_frame_bytes)
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
            if aligned:
                yield aligned
        elif message.get("text") is not None:
            texts += 1
            if texts <= LOGGED_TEXT_FRAMES or texts % 100 == 0:
                _log_ignored_text(message["text"], texts)


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
