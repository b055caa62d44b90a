"""A protocol-faithful fake of Cartesia TTS: SSE (``POST /tts/sse``) and WebSocket.

Point a client at it with ``CARTESIA_BASE_URL=http://127.0.0.1:<port>``. Requests are
validated as documented (see :mod:`testkit.cartesia_script`), answered with a tone whose
length follows the transcript, paced by ``first_audio_ms`` and ``realtime_factor``.
Per-request faults are queued in :attr:`FakeCartesia.faults`. ``/tts/websocket`` (contexts,
continuations, cancel, timestamps) is in :mod:`testkit.fake_cartesia_ws`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .cartesia_script import (
    CartesiaError,
    ErrorEvent,
    Fault,
    HttpError,
    SpeechChunk,
    SpeechSettings,
    Stall,
    parse_request,
    plan_speech,
)
from .fake_cartesia_ws import TTS_WS_PATH, TtsSocket, new_input_record
from .http_fake import HttpFake
from .streaming import Emit, ProducerResponse, sse_event

__all__ = ["FakeCartesia", "SpeechRequest"]

TTS_SSE_PATH = "/tts/sse"
API_VERSION = "2025-04-16"  # what GET / reports as the gateway's default
_SECRET_HEADERS = ("authorization", "x-api-key")


@dataclass(eq=False)
class SpeechRequest:
    """One request to /tts/sse and how it was answered."""

    id: int
    request_id: str
    headers: dict[str, str]  # credentials redacted
    auth_scheme: str | None  # "x-api-key" / "bearer" / None
    cartesia_version: str | None
    received_at: float = field(default_factory=time.monotonic)
    body: Any = None
    status: int = 200
    fault: Fault | None = None
    context_id: str | None = None
    first_chunk_at: float | None = None  # monotonic time the first audio chunk was sent
    ended_at: float | None = None
    chunks_sent: int = 0
    audio_bytes: int = 0
    completed: bool = False  # the stream ended with its done (or scripted error) event
    disconnected: bool = False  # the client went away first
    new_connection: bool = True  # False: it came on a kept-alive connection
    transport: str = "sse"  # or "websocket": one record per input of a context

    @property
    def transcript(self) -> str | None:
        value = self.body.get("transcript") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None

    @property
    def text(self) -> str:
        """The words voiced: the transcript without the space a WebSocket input ends with
        (inputs of one context are joined verbatim), the same for both transports."""
        return (self.transcript or "").strip()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "transcript": self.transcript,
            "received_at": self.received_at,
            "first_chunk_at": self.first_chunk_at,
            "ended_at": self.ended_at,
            "chunks_sent": self.chunks_sent,
            "completed": self.completed,
            "disconnected": self.disconnected,
            "new_connection": self.new_connection,
            "transport": self.transport,
        }


def _credentials(request: Request) -> tuple[str | None, str | None]:
    api_key = request.headers.get("x-api-key")
    if api_key is not None:
        return "x-api-key", api_key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme:
        return scheme.lower(), token.strip()
    return None, None


class FakeCartesia(HttpFake[SpeechRequest]):
    """The fake API. ``async with FakeCartesia(...) as tts:`` serves on ``tts.base_url``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        first_audio_ms: float = 150.0,
        realtime_factor: float = 4.0,
        ms_per_char: float = 65.0,
        min_audio_ms: float = 200.0,
        chunk_ms: tuple[int, ...] = (37, 53, 81),
        faults: Iterable[Fault] = (),
        max_records: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.settings = SpeechSettings(
            first_audio_ms=first_audio_ms,
            realtime_factor=realtime_factor,
            ms_per_char=ms_per_char,
            min_audio_ms=min_audio_ms,
            chunk_ms=chunk_ms,
        )
        self.faults: deque[Fault] = deque(faults)
        app = Starlette(
            routes=[
                Route(TTS_SSE_PATH, self._tts_sse, methods=["POST"]),
                Route("/", self._status, methods=["GET"]),
                WebSocketRoute(TTS_WS_PATH, self._tts_websocket),
            ]
        )
        self.status_requests = 0
        self.sockets_opened = 0  # accepted /tts/websocket connections
        self.socket_auth: list[str | None] = []  # how each socket authenticated
        self.cancels: list[str] = []  # context ids the clients cancelled
        self.sockets: set[TtsSocket] = set()  # open /tts/websocket connections
        # /tts/websocket faults: refuse every handshake with this status (401: a revoked
        # key, 503: an outage), and close a socket idle this long (Cartesia: 5 minutes).
        self.refuse_status: int | None = None
        self.idle_close_s: float | None = None
        self.socket_refusals: list[int] = []  # statuses of refused handshakes
        self.socket_closes: list[int] = []  # how each socket ended: its close code (either side)
        super().__init__(app, max_records=max_records, host=host, port=port, websockets=True)

    # --- settings shortcuts (settable between or during tests) ----------------------------

    @property
    def first_audio_ms(self) -> float:
        return self.settings.first_audio_ms

    @first_audio_ms.setter
    def first_audio_ms(self, value: float) -> None:
        self.settings = dataclasses.replace(self.settings, first_audio_ms=value)

    @property
    def realtime_factor(self) -> float:
        return self.settings.realtime_factor

    @realtime_factor.setter
    def realtime_factor(self, value: float) -> None:
        self.settings = dataclasses.replace(self.settings, realtime_factor=value)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The value for CARTESIA_BASE_URL."""
        return self._server.base_url

    def timeline(self, since: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """JSON-ready timings of the latest ``limit`` requests."""
        recent = list(self.requests)[-limit:] if limit > 0 else []
        return [
            r.to_json() for r in recent if since is None or r.ended_at is None or r.ended_at > since
        ]

    # --- the endpoint -----------------------------------------------------------------------

    def _error(self, record: SpeechRequest, error: CartesiaError) -> Response:
        record.status = error.status
        record.ended_at = time.monotonic()
        self._changes.notify()
        return JSONResponse(error.body(record.request_id), status_code=error.status)

    def _check_headers(self, request: Request, record: SpeechRequest) -> CartesiaError | None:
        scheme, key = _credentials(request)
        if self.api_key is not None and (
            scheme not in ("x-api-key", "bearer") or key != self.api_key
        ):
            return CartesiaError(401, "unauthorized", "Unauthorized", "Invalid API key.")
        if not record.cartesia_version:
            return CartesiaError(
                400,
                "missing_version",
                "Missing version",
                "The Cartesia-Version header is required.",
            )
        return None

    async def _tts_websocket(self, websocket: WebSocket) -> None:
        socket = TtsSocket(self, websocket)
        self.sockets.add(socket)
        try:
            await socket.serve()
        finally:
            self.sockets.discard(socket)

    async def drop_sockets(self, code: int = 1011, reason: str = "Internal error") -> int:
        """Close every open /tts/websocket connection from the server side (a fault)."""
        sockets = list(self.sockets)
        for socket in sockets:
            await socket.ws.close(code, reason)
        return len(sockets)

    async def send_raw(self, text: str) -> int:
        """Send ``text`` as is on every open /tts/websocket connection (a garbled frame)."""
        sockets = list(self.sockets)
        for socket in sockets:
            await socket.ws.send_text(text)
        return len(sockets)

    def notify(self) -> None:
        self._changes.notify()

    def record_input(
        self, socket: TtsSocket, message: dict[str, Any], context_id: str
    ) -> SpeechRequest:
        """A record for one input of a WebSocket context (what /tts/sse keeps per request)."""
        record = new_input_record(socket, next(self._ids), message, context_id)
        self.requests.append(record)
        self.notify()
        return record

    def inputs_of(self, context_id: str) -> list[SpeechRequest]:
        return [
            r for r in self.requests if r.transport == "websocket" and r.context_id == context_id
        ]

    async def _status(self, request: Request) -> Response:
        """``GET /``: the API's status and default version (clients use it to warm up)."""
        self.note_connection(request)
        self.status_requests += 1
        return JSONResponse({"ok": True, "version": API_VERSION})

    async def _tts_sse(self, request: Request) -> Response:
        scheme, _ = _credentials(request)
        record = SpeechRequest(
            id=next(self._ids),
            request_id=str(uuid.uuid4()),
            headers={
                k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in request.headers.items()
            },
            auth_scheme=scheme,
            cartesia_version=request.headers.get("cartesia-version"),
        )
        record.new_connection = self.note_connection(request)
        self.requests.append(record)
        self._changes.notify()
        problem = self._check_headers(request, record)
        if problem is not None:
            return self._error(record, problem)
        try:
            record.body = await request.json()
        except ValueError:
            return self._error(
                record,
                CartesiaError(
                    400, "invalid_request", "Invalid request", "The body is not valid JSON."
                ),
            )
        try:
            params = parse_request(record.body)
        except CartesiaError as exc:
            return self._error(record, exc)
        fault = self.faults.popleft() if self.faults else None
        record.fault = fault
        if isinstance(fault, HttpError):
            message = fault.message or "Fault injected by the test."
            return self._error(
                record, CartesiaError(fault.status, "injected_error", "Error", message)
            )
        record.context_id = params.context_id or str(uuid.uuid4())
        chunks = plan_speech(params, self.settings)
        return ProducerResponse(
            functools.partial(self._produce, record, chunks, fault),
            headers={"cache-control": "no-cache", "x-request-id": record.request_id},
        )

    async def _produce(
        self,
        record: SpeechRequest,
        chunks: list[SpeechChunk],
        fault: ErrorEvent | Stall | None,
        emit: Emit,
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop_after = fault.after_chunks if fault is not None else len(chunks)
        try:
            for chunk in chunks[:stop_after]:
                await asyncio.sleep(max(0.0, start + chunk.at_s - loop.time()))
                if record.first_chunk_at is None:
                    record.first_chunk_at = time.monotonic()
                await emit(sse_event(json.dumps(self._chunk_event(record, chunk))))
                record.chunks_sent += 1
                record.audio_bytes += len(chunk.pcm)
            if isinstance(fault, Stall):
                while fault.comment_every_s is not None:
                    await asyncio.sleep(fault.comment_every_s)
                    await emit(b": keep-alive\n\n")
                await self._closing.wait()
                return
            await emit(sse_event(json.dumps(self._final_event(record, fault))))
            record.completed = True
        except asyncio.CancelledError:
            record.disconnected = True
            raise
        finally:
            record.ended_at = time.monotonic()
            self._changes.notify()

    @staticmethod
    def _chunk_event(record: SpeechRequest, chunk: SpeechChunk) -> dict[str, Any]:
        return {
            "type": "chunk",
            "data": base64.b64encode(chunk.pcm).decode("ascii"),
            "done": False,
            "status_code": 206,
            "step_time": chunk.step_time_ms,
            "context_id": record.context_id,
        }

    @staticmethod
    def _final_event(record: SpeechRequest, fault: ErrorEvent | None) -> dict[str, Any]:
        if fault is None:
            return {
                "type": "done",
                "done": True,
                "status_code": 206,
                "context_id": record.context_id,
            }
        return {
            "type": "error",
            "done": True,
            "status_code": fault.status_code,
            "title": fault.title,
            "message": fault.message,
            "error_code": fault.error_code,
            "request_id": record.request_id,
            "context_id": record.context_id,
        }
