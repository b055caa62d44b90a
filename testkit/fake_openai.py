"""A protocol-faithful fake of OpenAI Chat Completions (``POST /v1/chat/completions``).

Point the real openai SDK at it with ``OPENAI_BASE_URL=http://127.0.0.1:<port>/v1``. Each
request takes the next scripted reply from :attr:`FakeOpenAI.replies` (see
:mod:`testkit.openai_script`); with none scripted it answers deterministically from the
last user message, paced by ``first_token_ms`` / ``per_token_ms``.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .http_fake import HttpFake
from .openai_script import (
    HttpError,
    MidStreamError,
    Reply,
    Stall,
    StreamPlan,
    Text,
    Timing,
    Tool,
    completion_body,
    default_reply_text,
    error_body,
    plan_stream,
)
from .streaming import Emit, ProducerResponse

__all__ = ["ChatRequest", "FakeOpenAI"]

CHAT_PATH = "/v1/chat/completions"
MODEL_PATH = "/v1/models/{model}"


@dataclass(eq=False)
class ChatRequest:
    """One request to /v1/chat/completions and how it was answered."""

    id: int
    headers: dict[str, str]  # Authorization redacted
    auth_scheme: str | None
    received_at: float = field(default_factory=time.monotonic)
    body: dict[str, Any] = field(default_factory=dict)
    reply: Reply | None = None
    status: int = 200
    first_byte_at: float | None = None  # monotonic time the first body bytes were sent
    ended_at: float | None = None  # ... and the stream ended (any way)
    completed: bool = False  # the scripted stream was sent to its end
    disconnected: bool = False  # the client went away first
    new_connection: bool = True  # False: it came on a kept-alive connection

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else []

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def stream_options(self) -> dict[str, Any] | None:
        options = self.body.get("stream_options")
        return options if isinstance(options, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "model": self.model,
            "received_at": self.received_at,
            "first_byte_at": self.first_byte_at,
            "ended_at": self.ended_at,
            "completed": self.completed,
            "disconnected": self.disconnected,
            "new_connection": self.new_connection,
        }


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * max(0, len(key) - 5)}{key[-2:]}" if len(key) > 5 else "***"


class FakeOpenAI(HttpFake[ChatRequest]):
    """The fake API. ``async with FakeOpenAI(...) as llm:`` serves on ``llm.base_url``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        replies: Iterable[Reply] = (),
        first_token_ms: float = 100.0,
        per_token_ms: float = 15.0,
        max_records: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.replies: deque[Reply] = deque(replies)
        self.first_token_ms = first_token_ms
        self.per_token_ms = per_token_ms
        app = Starlette(
            routes=[
                Route(CHAT_PATH, self._chat, methods=["POST"]),
                Route(MODEL_PATH, self._model, methods=["GET"]),
            ]
        )
        self.model_requests = 0
        super().__init__(app, max_records=max_records, host=host, port=port)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The value for OPENAI_BASE_URL (includes /v1)."""
        return f"{self._server.base_url}/v1"

    def add_route(self, route: BaseRoute) -> None:
        """Serve an extra route (e.g. the test kit's control endpoints) on this app."""
        self.app.router.routes.append(route)

    # --- the endpoint -----------------------------------------------------------------------

    def _timing(self) -> Timing:
        return Timing(self.first_token_ms, self.per_token_ms)

    def _error(self, record: ChatRequest, status: int, message: str | None = None) -> Response:
        record.status = status
        record.ended_at = time.monotonic()
        self._changes.notify()
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}"}
        return JSONResponse(error_body(status, message), status_code=status, headers=headers)

    async def _model(self, request: Request) -> Response:
        """``GET /v1/models/{model}``: the model object (clients use it to warm up)."""
        self.note_connection(request)
        self.model_requests += 1
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if self.api_key is not None and (scheme.lower() != "bearer" or key != self.api_key):
            return JSONResponse(error_body(401, "Incorrect API key provided."), status_code=401)
        model = request.path_params["model"]
        return JSONResponse({"id": model, "object": "model", "created": 0, "owned_by": "system"})

    async def _chat(self, request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        headers = {
            k: ("<redacted>" if k == "authorization" else v) for k, v in request.headers.items()
        }
        record = ChatRequest(next(self._ids), headers, scheme.lower() or None)
        record.new_connection = self.note_connection(request)
        self.requests.append(record)
        self._changes.notify()
        if self.api_key is not None and (scheme.lower() != "bearer" or key != self.api_key):
            shown = _mask(key) if key else "(none)"
            return self._error(
                record,
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            )
        try:
            body = await request.json()
        except ValueError:
            return self._error(record, 400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self._error(record, 400, "The request body must be a JSON object.")
        record.body = body
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            return self._error(record, 400, "'model' and 'messages' are required properties.")
        reply = (
            self.replies.popleft() if self.replies else Text(default_reply_text(record.messages))
        )
        record.reply = reply
        if isinstance(reply, HttpError):
            return self._http_error(record, reply)
        if record.stream:
            plan = plan_stream(reply, body, self._timing())
            return ProducerResponse(
                functools.partial(self._produce, record, plan),
                headers={"x-request-id": f"req_{uuid.uuid4().hex}", "cache-control": "no-cache"},
            )
        return await self._complete(record, reply, body)

    def _http_error(self, record: ChatRequest, reply: HttpError) -> Response:
        response = self._error(record, reply.status, reply.message)
        retry_after = reply.retry_after_s
        if retry_after is None and reply.status == 429:
            retry_after = 1.0
        if retry_after is not None:
            response.headers["retry-after"] = f"{retry_after:g}"
        return response

    async def _complete(
        self, record: ChatRequest, reply: Text | Tool | MidStreamError | Stall, body: dict[str, Any]
    ) -> Response:
        """stream=false: one chat.completion JSON after the first-token latency."""
        if isinstance(reply, MidStreamError):
            return self._error(record, 500, reply.message)
        if isinstance(reply, Stall):
            return ProducerResponse(
                functools.partial(self._produce, record, StreamPlan(end="stall")),
                media_type="application/json",
            )
        await asyncio.sleep(self._timing().resolve(reply).first_token_ms / 1000)
        record.first_byte_at = record.ended_at = time.monotonic()
        record.completed = True
        self._changes.notify()
        return JSONResponse(completion_body(reply, body))

    async def _produce(self, record: ChatRequest, plan: StreamPlan, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            for delay, data in plan.writes:
                due += delay
                await asyncio.sleep(max(0.0, due - loop.time()))
                if record.first_byte_at is None:
                    record.first_byte_at = time.monotonic()
                await emit(data)
            if plan.end == "stall":
                await self._closing.wait()
            else:
                record.completed = True
        except asyncio.CancelledError:
            record.disconnected = True
            raise
        finally:
            record.ended_at = time.monotonic()
            self._changes.notify()

    def timeline(self, since: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """JSON-ready timings of the latest ``limit`` requests."""
        recent = list(self.requests)[-limit:] if limit > 0 else []
        return [
            r.to_json() for r in recent if since is None or r.ended_at is None or r.ended_at > since
        ]
