"""A protocol-faithful fake of Deepgram live STT (``GET /v1/listen`` over WebSocket).

Point the real deepgram-sdk at it with ``DEEPGRAM_BASE_URL=ws://127.0.0.1:<port>``. What it
hears is decided by the audio (see :mod:`testkit.deepgram_engine`); what it says is the
next line of :attr:`FakeDeepgram.utterances` (shared by all connections, so a reconnect
continues the script) or ``default_text``. Faults are plain attributes, settable between
or during tests: ``refuse_status`` (every handshake), ``close_after_audio_s`` with
``close_code``/``close_reason`` (the next connection only), and ``stall``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ._service import Service
from ._waiting import Changes
from .deepgram_engine import ListenOptions, ListenParamError, Message, TranscriptEngine, VadSettings
from .deepgram_records import DeepgramConnection, HandshakeRejection, summarize

__all__ = ["FakeDeepgram"]

LISTEN_PATH = "/v1/listen"
_AUTH_SCHEMES = ("token", "bearer")
_SECRET_HEADERS = ("authorization", "sec-websocket-protocol")


def _credentials(headers: Headers) -> tuple[str | None, str | None]:
    """(scheme, key) from ``Authorization`` or the ``token, KEY`` subprotocol form."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        return scheme.lower(), key.strip()
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) == 2 and offered[0].lower() in _AUTH_SCHEMES:
        return f"subprotocol:{offered[0].lower()}", offered[1]
    return None, None


def _http_error(status: int, message: str, request_id: str) -> Response:
    body = json.dumps(
        {
            "err_code": "INVALID_AUTH" if status == 401 else "REQUEST_REJECTED",
            "err_msg": message,
            "request_id": request_id,
        }
    ).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("dg-error", message),
            ("dg-request-id", request_id),
        ]
    )
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Response(status, phrase, headers, body)


class _Outbox:
    """Sends JSON to the client, recording each message; optionally after a fixed delay."""

    def __init__(
        self,
        ws: ServerConnection,
        record: DeepgramConnection,
        *,
        delay_s: float,
        stalled: Callable[[], bool],
        changed: Callable[[], None],
    ) -> None:
        self._ws, self._record = ws, record
        self._delay_s, self._stalled, self._changed = delay_s, stalled, changed
        self._queue: deque[tuple[float, Message]] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if self._delay_s <= 0:
            await self._send_now(message)
            return
        self._queue.append((asyncio.get_running_loop().time() + self._delay_s, message))
        self._idle.clear()
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="fake-deepgram-outbox")

    async def drain(self) -> None:
        await self._idle.wait()

    async def aclose(self) -> None:
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _send_now(self, message: Message) -> None:
        if self._stalled():
            return
        await self._ws.send(json.dumps(message))
        self._record.record("sent", summarize(message))
        self._changed()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._queue:
                    due, message = self._queue[0]
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    self._queue.popleft()
                    await self._send_now(message)
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
        except ConnectionClosed:
            self._queue.clear()
            self._idle.set()


@dataclasses.dataclass(frozen=True, slots=True)
class _CloseFault:
    after_audio_s: float
    code: int
    reason: str


class _IdleWatchdog:
    """Calls ``on_idle`` once :meth:`touch` was not called for ``idle_s``.

    One timer per idle period rather than one per message: the timer re-arms itself
    from the last touch when it fires early.
    """

    def __init__(self, idle_s: float, on_idle: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle_s, self._on_idle = idle_s, on_idle
        self._last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._last + idle_s, self._check
        )

    def touch(self) -> None:
        self._last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        due = self._last + self._idle_s
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
        else:
            self._handle = None
            self._on_idle()


class _Session:
    """One live stream: feeds audio to the engine and obeys the control messages."""

    def __init__(
        self,
        fake: FakeDeepgram,
        ws: ServerConnection,
        record: DeepgramConnection,
        engine: TranscriptEngine,
        close_fault: _CloseFault | None,
    ) -> None:
        self._fake, self._ws, self._record, self._engine = fake, ws, record, engine
        self._close_fault = close_fault
        self._outbox = _Outbox(
            ws,
            record,
            delay_s=fake.result_delay_ms / 1000,
            stalled=lambda: fake.stall,
            changed=fake._changes.notify,
        )
        self._idle_close: asyncio.Task[None] | None = None

    async def run(self) -> None:
        watchdog = _IdleWatchdog(self._fake.idle_timeout_s, self._on_idle)
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    watchdog.touch()
                    done = await self._on_audio(message)
                else:
                    done = await self._on_text(message, watchdog.touch)
                if done:
                    return
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            if self._idle_close is not None:
                await self._idle_close
            await self._outbox.aclose()

    def _on_idle(self) -> None:
        self._idle_close = asyncio.create_task(self.close(1011, "NET-0001"))

    async def close(self, code: int, reason: str, *, drain: bool = False) -> None:
        if drain:
            await self._outbox.drain()
        await self._outbox.aclose()
        await self._fake._close(self._ws, self._record, code, reason)

    async def _send_all(self, messages: Iterable[Message]) -> None:
        for message in messages:
            await self._outbox.send(message)

    async def _on_audio(self, data: bytes) -> bool:
        record = self._record
        if not data:
            record.violations.append("empty binary frame (ends the stream like CloseStream)")
            record.record("recv", {"type": "empty_frame"})
            return await self._close_stream()
        if record.audio_frames == 0:
            record.record("recv", {"type": "audio_start"})
        record.audio_frames += 1
        record.audio_bytes += len(data)
        if self._fake.keep_audio:
            record.audio.extend(data)
        self._fake._changes.notify()
        await self._send_all(self._engine.feed(data))
        fault = self._close_fault
        if fault is not None and self._engine.audio_seconds >= fault.after_audio_s:
            await self.close(fault.code, fault.reason)
            return True
        return False

    async def _on_text(self, text: str, keepalive: Callable[[], None]) -> bool:
        record = self._record
        try:
            message: Any = json.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind = None
        record.record("recv", {"type": kind if isinstance(kind, str) else "invalid"})
        self._fake._changes.notify()
        if kind == "KeepAlive":
            record.keepalives += 1
            keepalive()
        elif kind == "Finalize":
            record.finalizes += 1
            await self._send_all(self._engine.finalize())
        elif kind == "CloseStream":
            record.closestream = True
            return await self._close_stream()
        else:
            record.violations.append(f"unsupported text message: {text[:200]!r}")
            await self._outbox.send(
                {
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": "Failed to deserialize the message: unknown or invalid type.",
                    "message": text,
                }
            )
        return False

    async def _close_stream(self) -> bool:
        await self._send_all(self._engine.close())
        await self.close(1000, "", drain=True)
        return True


class FakeDeepgram(Service):
    """The fake service. ``async with FakeDeepgram(...) as dg:`` serves on ``dg.url``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        utterances: Iterable[str] = (),
        default_text: str = "hello there",
        vad: VadSettings | None = None,
        result_delay_ms: float = 0.0,
        idle_timeout_s: float = 10.0,
        endpointing_override_ms: int | None = None,
        keep_audio: bool = True,
        max_records: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.utterances: deque[str] = deque(utterances)
        self.default_text = default_text
        self.vad = vad or VadSettings()
        self.result_delay_ms = result_delay_ms
        self.idle_timeout_s = idle_timeout_s
        self.endpointing_override_ms = endpointing_override_ms
        self.keep_audio = keep_audio
        # faults
        self.refuse_status: int | None = None
        self.close_after_audio_s: float | None = None
        self.close_code = 1011
        self.close_reason = "NET-0000"
        self.stall = False
        # records
        self.connections: deque[DeepgramConnection] = deque(maxlen=max_records)
        self.rejections: deque[HandshakeRejection] = deque(maxlen=max_records)
        self._host, self._port = host, port
        self._ids = itertools.count(1)
        self._changes = Changes()
        self._server: Server | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeDeepgram not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The value for DEEPGRAM_BASE_URL (the SDK appends /v1/listen)."""
        return f"ws://{self._host}:{self.port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            compression=None,
            close_timeout=2,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    # --- waiting and reading ----------------------------------------------------------------

    async def wait_for_connections(
        self, n: int, timeout_s: float = 5.0
    ) -> list[DeepgramConnection]:
        """The first ``n`` connections (counting from the oldest kept), once they exist."""
        return await self._changes.wait_for(
            lambda: list(self.connections)[:n] if len(self.connections) >= n else None, timeout_s
        )

    async def wait_until(self, probe: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        """Re-check ``probe`` on every change; return its first value that is not None/False."""
        return await self._changes.wait_for(lambda: probe() or None, timeout_s)

    def timeline(self, since: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """JSON-ready send/recv timelines of the latest ``limit`` connections."""
        recent = list(self.connections)[-limit:] if limit > 0 else []
        return [
            c.to_json(since)
            for c in recent
            if since is None or c.closed_at is None or c.closed_at > since
        ]

    # --- handshake --------------------------------------------------------------------------

    def _reject(self, request: Request, status: int, message: str, scheme: str | None) -> Response:
        self.rejections.append(
            HandshakeRejection(time.monotonic(), status, message, request.path, scheme)
        )
        self._changes.notify()
        return _http_error(status, message, str(uuid.uuid4()))

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        scheme, key = _credentials(request.headers)
        if self.refuse_status is not None:
            return self._reject(request, self.refuse_status, "Refused by fault injection.", scheme)
        url = urlsplit(request.path)
        if url.path != LISTEN_PATH:
            return self._reject(request, 404, f"Unknown path {url.path}.", scheme)
        if self.api_key is not None:
            bare_scheme = scheme.removeprefix("subprotocol:") if scheme else None
            if bare_scheme not in _AUTH_SCHEMES or key != self.api_key:
                return self._reject(request, 401, "Invalid credentials.", scheme)
        try:
            ListenOptions.from_query(dict(parse_qsl(url.query)))
        except ListenParamError as exc:
            return self._reject(request, 400, str(exc), scheme)
        return None

    def _process_response(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> Response:
        if "dg-request-id" not in response.headers:  # rejections already carry one
            response.headers["dg-request-id"] = str(uuid.uuid4())
        return response

    def _select_subprotocol(
        self, ws: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        for protocol in offered:
            if protocol.lower() in _AUTH_SCHEMES:
                return protocol
        return None

    # --- connections ------------------------------------------------------------------------

    def _next_transcript(self) -> str:
        return self.utterances.popleft() if self.utterances else self.default_text

    def _take_close_fault(self) -> _CloseFault | None:
        after, self.close_after_audio_s = self.close_after_audio_s, None
        return None if after is None else _CloseFault(after, self.close_code, self.close_reason)

    def _new_record(self, ws: ServerConnection) -> DeepgramConnection:
        request, response = ws.request, ws.response
        assert request is not None, "set once the handshake is done"
        assert response is not None, "set once the handshake is done"
        url = urlsplit(request.path)
        scheme, _ = _credentials(request.headers)
        headers = {
            name: ("<redacted>" if name.lower() in _SECRET_HEADERS else value)
            for name, value in request.headers.raw_items()
        }
        return DeepgramConnection(
            id=next(self._ids),
            request_id=response.headers["dg-request-id"],
            path=url.path,
            query=dict(parse_qsl(url.query)),
            headers=headers,
            auth_scheme=scheme,
        )

    async def _close(
        self, ws: ServerConnection, record: DeepgramConnection, code: int, reason: str
    ) -> None:
        record.record("sent", {"type": "close", "code": code, "reason": reason})
        record.closed_by = "server"
        record.mark_closed(code, reason)
        self._changes.notify()
        await ws.close(code, reason)

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._new_record(ws)
        self.connections.append(record)
        self._changes.notify()
        try:
            await self._serve_stream(ws, record)
        finally:
            if not record.closed:
                await ws.close()
                record.closed_by = "client"
                record.mark_closed(ws.close_code, ws.close_reason)
                self._changes.notify()

    async def _serve_stream(self, ws: ServerConnection, record: DeepgramConnection) -> None:
        options = ListenOptions.from_query(record.query)
        if self.endpointing_override_ms is not None:
            options = dataclasses.replace(options, endpointing_ms=self.endpointing_override_ms)
        record.options = options
        close_fault = self._take_close_fault()
        problem = options.audio_problem()
        if problem is not None:
            record.violations.append(problem)
            await self._close(ws, record, 1008, "DATA-0000")
            return
        engine = TranscriptEngine(
            options,
            next_transcript=self._next_transcript,
            request_id=record.request_id,
            vad=self.vad,
        )
        await _Session(self, ws, record, engine, close_fault).run()
