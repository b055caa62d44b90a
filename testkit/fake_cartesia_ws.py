"""The fake Cartesia's ``/tts/websocket``: contexts, continuations, cancel, flush, timestamps.

Wire format as documented (/work/shared/PROVIDERS.md, Cartesia's WebSocket reference):

* handshake: the key in ``X-API-Key`` / ``Authorization: Bearer`` or ``?api_key=``, the
  version in ``Cartesia-Version`` or ``?cartesia_version=`` (the query wins);
* client: generation requests ``{context_id, model_id, transcript, voice, output_format,
  language, continue, add_timestamps, max_buffer_delay_ms}`` (an empty transcript with
  ``continue: false`` ends the context's input; ``flush: true`` asks for a
  ``flush_done``), and ``{context_id, cancel: true}``;
* server: ``chunk`` / ``timestamps`` / ``flush_done`` / ``done`` / ``error`` JSON
  messages, each with its ``context_id``; every context ends with ``done`` or ``error``
  (a cancelled one simply stops); a socket idle for ``idle_close_s`` is closed (Cartesia:
  5 minutes; off unless set).

Each input is voiced as it arrives (``max_buffer_delay_ms: 0``): its audio starts
``first_audio_ms`` after it is received, or right after the context's previous audio if
that is still being generated (the stream is warm). One :class:`SpeechRequest` is kept
per input (``transport="websocket"``), so timelines and counts work for both transports.
Faults (:attr:`FakeCartesia.faults`) apply per context: an ``HttpError`` becomes an
``error`` message, ``ErrorEvent`` and ``Stall`` act after that many chunks;
``refuse_status`` refuses handshakes and ``drop_sockets()`` closes the open sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from .cartesia_script import (
    CartesiaError,
    ErrorEvent,
    Fault,
    HttpError,
    SpeechParams,
    Stall,
    parse_request,
    plan_speech,
    word_timestamps,
)

if TYPE_CHECKING:
    from .fake_cartesia import FakeCartesia, SpeechRequest

__all__ = ["TTS_WS_PATH", "TtsSocket"]

TTS_WS_PATH = "/tts/websocket"
_SECRET_HEADERS = ("authorization", "x-api-key")


@dataclass(eq=False)
class _Context:
    context_id: str
    params: SpeechParams
    add_timestamps: bool
    fault: Fault | None
    inputs: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    chunks_sent: int = 0
    audio_s: float = 0.0  # audio generated so far (timestamps count from the context start)
    flushes: int = 0
    free_at: float = 0.0  # loop time its generator has voiced everything it was given


class TtsSocket:
    """One client connection to ``/tts/websocket``."""

    def __init__(self, fake: FakeCartesia, websocket: WebSocket) -> None:
        self.fake = fake
        self.ws = websocket
        self.contexts: dict[str, _Context] = {}
        self.finished: set[str] = set()  # contexts that ended (done, error or cancel)
        self._send_lock = asyncio.Lock()

    # --- the connection ---------------------------------------------------------------

    async def serve(self) -> None:
        ws = self.ws
        query = ws.query_params
        scheme, key = _credentials(ws)
        if query.get("api_key"):
            scheme, key = "query", query["api_key"]
        version = query.get("cartesia_version") or ws.headers.get("cartesia-version")
        if self.fake.refuse_status is not None:
            status = self.fake.refuse_status
            self.fake.socket_refusals.append(status)
            self.fake.notify()
            await self._deny(CartesiaError(status, "refused", "Refused", "Fault injected."))
            return
        if self.fake.api_key is not None and key != self.fake.api_key:
            await self._deny(CartesiaError(401, "unauthorized", "Unauthorized", "Invalid API key."))
            return
        if not version:
            message = "The Cartesia-Version header (or cartesia_version) is required."
            await self._deny(CartesiaError(400, "missing_version", "Missing version", message))
            return
        await ws.accept()
        self.fake.sockets_opened += 1
        self.fake.socket_auth.append(scheme)
        self.fake.notify()
        self.headers = {
            k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in ws.headers.items()
        }
        self.version = version
        try:
            while True:
                try:
                    async with asyncio.timeout(self.fake.idle_close_s):
                        text = await ws.receive_text()
                except WebSocketDisconnect as exc:
                    self.fake.socket_closes.append(exc.code)  # 1006: gone without a close
                    return
                except TimeoutError:
                    if self.contexts:
                        continue  # still voicing: not idle
                    await ws.close(1000, "Idle timeout")
                    self.fake.socket_closes.append(1000)
                    return
                await self._on_message(text)
        finally:
            for context in self.contexts.values():
                if context.task is not None:
                    context.task.cancel()
            tasks = [c.task for c in self.contexts.values() if c.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            self.fake.notify()

    async def _deny(self, error: CartesiaError) -> None:
        body = error.body(str(uuid.uuid4()))
        await self.ws.send_denial_response(JSONResponse(body, status_code=error.status))

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.send_text(json.dumps(message))

    async def _error(self, context_id: str | None, status: int, text: str) -> None:
        await self._send(
            {
                "type": "error",
                "done": True,
                "error": text,
                "status_code": status,
                "context_id": context_id,
            }
        )

    # --- client messages ----------------------------------------------------------------

    async def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self._error(None, 400, "Invalid JSON message.")
            return
        if not isinstance(message, dict):
            await self._error(None, 400, "A message must be a JSON object.")
            return
        context_id = message.get("context_id")
        if not isinstance(context_id, str) or not context_id:
            await self._error(None, 400, "context_id is required.")
            return
        if message.get("cancel") is True:
            self.fake.cancels.append(context_id)
            context = self.contexts.pop(context_id, None)
            self.finished.add(context_id)
            if context is not None and context.task is not None:
                context.task.cancel()
            self.fake.notify()
            return
        if context_id in self.finished:
            await self._error(context_id, 400, f"Context {context_id} has already finished.")
            return
        await self._on_input(context_id, message)

    async def _on_input(self, context_id: str, message: dict[str, Any]) -> None:
        transcript = message.get("transcript")
        more = message.get("continue", False) is True
        flush = message.get("flush", False) is True
        if not isinstance(transcript, str):
            await self._fail(context_id, 400, "transcript must be a string.")
            return
        try:
            # Every input carries the full request; an empty one only closes or flushes.
            params = parse_request({**message, "transcript": transcript or "."})
        except CartesiaError as exc:
            await self._fail(context_id, exc.status, f"{exc.title}: {exc.message}")
            return
        context = self.contexts.get(context_id)
        if context is None:
            fault = self.fake.faults.popleft() if self.fake.faults else None
            context = _Context(context_id, params, message.get("add_timestamps") is True, fault)
            self.contexts[context_id] = context
            context.task = asyncio.create_task(self._generate(context), name=f"ctx:{context_id}")
        elif (params.model_id, params.voice_id, params.sample_rate) != (
            context.params.model_id,
            context.params.voice_id,
            context.params.sample_rate,
        ):
            await self._fail(context_id, 400, "Inputs on one context must keep their settings.")
            return
        if transcript:
            record = self.fake.record_input(self, message, context_id)
            record.fault = context.fault  # the context's fault, as SSE keeps the request's
            context.inputs.put_nowait(
                ("text", (dataclasses.replace(params, transcript=transcript), record))
            )
        if flush:
            context.inputs.put_nowait(("flush", None))
        if not more:
            context.inputs.put_nowait(("end", None))

    async def _fail(self, context_id: str, status: int, text: str) -> None:
        context = self.contexts.pop(context_id, None)
        if context is not None and context.task is not None:
            context.task.cancel()
        self.finished.add(context_id)
        await self._error(context_id, status, text)

    # --- generation -----------------------------------------------------------------------

    async def _generate(self, context: _Context) -> None:
        loop = asyncio.get_running_loop()
        fault = context.fault
        settings = dataclasses.replace(self.fake.settings, first_audio_ms=0.0)
        try:
            if isinstance(fault, HttpError):
                await self._end(
                    context, fault.status, fault.message or "Fault injected by the test."
                )
                return
            while True:
                kind, payload = await context.inputs.get()
                if kind == "end":
                    await self._send(
                        {
                            "type": "done",
                            "done": True,
                            "status_code": 206,
                            "context_id": context.context_id,
                        }
                    )
                    self._finish(context)
                    return
                if kind == "flush":
                    context.flushes += 1
                    await self._send(
                        {
                            "type": "flush_done",
                            "done": False,
                            "flush_done": True,
                            "flush_id": context.flushes,
                            "status_code": 206,
                            "context_id": context.context_id,
                        }
                    )
                    continue
                params, record = payload
                first_audio_s = self.fake.settings.first_audio_ms / 1000
                start = max(loop.time() + first_audio_s, context.free_at)
                chunks = plan_speech(params, settings)
                if chunks:
                    context.free_at = start + chunks[-1].at_s
                offset_s = context.audio_s
                total_s = sum(len(c.pcm) for c in chunks) / 2 / params.sample_rate
                # The input's words over its audio; each batch goes out once its audio has.
                timing = word_timestamps(params.transcript, offset_s, offset_s + total_s)
                told = 0
                for chunk in chunks:
                    if (
                        isinstance(fault, ErrorEvent | Stall)
                        and context.chunks_sent >= fault.after_chunks
                    ):
                        if isinstance(fault, ErrorEvent):
                            await self._end(context, fault.status_code, fault.message)
                            return
                        await asyncio.Event().wait()  # stalled: until cancel or close
                    await asyncio.sleep(max(0.0, start + chunk.at_s - loop.time()))
                    if record.first_chunk_at is None:
                        record.first_chunk_at = time.monotonic()
                    await self._send(
                        {
                            "type": "chunk",
                            "data": base64.b64encode(chunk.pcm).decode("ascii"),
                            "done": False,
                            "status_code": 206,
                            "step_time": chunk.step_time_ms,
                            "context_id": context.context_id,
                        }
                    )
                    context.chunks_sent += 1
                    record.chunks_sent += 1
                    record.audio_bytes += len(chunk.pcm)
                    context.audio_s += len(chunk.pcm) / 2 / params.sample_rate
                    if context.add_timestamps:
                        told = await self._timestamps(context, timing, told)
                if context.add_timestamps:
                    await self._timestamps(context, timing, told, final=True)
                record.completed = True
                record.ended_at = time.monotonic()
                self.fake.notify()
        except asyncio.CancelledError:
            for record in self.fake.inputs_of(context.context_id):
                if not record.completed:
                    record.disconnected = True
                    record.ended_at = time.monotonic()
            raise

    async def _timestamps(
        self,
        context: _Context,
        timing: tuple[list[str], list[float], list[float]],
        told: int,
        *,
        final: bool = False,
    ) -> int:
        """Send the words voiced by now (all of the input's when ``final``); new ``told``."""
        words, starts, ends = timing
        upto = len(words) if final else sum(1 for end in ends if end <= context.audio_s + 1e-6)
        if upto > told:
            await self._send(
                {
                    "type": "timestamps",
                    "done": False,
                    "status_code": 206,
                    "context_id": context.context_id,
                    "word_timestamps": {
                        "words": words[told:upto],
                        "start": starts[told:upto],
                        "end": ends[told:upto],
                    },
                }
            )
        return max(told, upto)

    async def _end(self, context: _Context, status: int, text: str) -> None:
        for record in self.fake.inputs_of(context.context_id):
            record.status = status
            record.ended_at = record.ended_at or time.monotonic()
        await self._error(context.context_id, status, text)
        self._finish(context)

    def _finish(self, context: _Context) -> None:
        self.contexts.pop(context.context_id, None)
        self.finished.add(context.context_id)
        self.fake.notify()


def _credentials(ws: WebSocket) -> tuple[str | None, str | None]:
    api_key = ws.headers.get("x-api-key")
    if api_key is not None:
        return "x-api-key", api_key
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return "bearer", token.strip()
    return None, None


def new_input_record(
    socket: TtsSocket, record_id: int, message: dict[str, Any], context_id: str
) -> SpeechRequest:
    from .fake_cartesia import SpeechRequest

    scheme = socket.fake.socket_auth[-1] if socket.fake.socket_auth else None
    return SpeechRequest(
        id=record_id,
        request_id=str(uuid.uuid4()),
        headers=socket.headers,
        auth_scheme=scheme,
        cartesia_version=socket.version,
        body=message,
        context_id=context_id,
        transport="websocket",
        new_connection=False,
    )
