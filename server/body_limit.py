"""Request bodies: refused by size before they are read, and never read unauthenticated.

FastAPI reads and parses a route's JSON body before any dependency runs, so the admin
token check of ``/api`` used to come after a 50 MB body had been buffered. This pure ASGI
layer sits in front of the app:

1. on a guarded path (``/api``), ``guard(scope)`` runs first, on the headers alone; if it
   returns a response (401, 503) that is the answer and not a byte of the body is read;
2. a ``Content-Length`` over ``max_bytes`` gets 413 at once, unread;
3. a body without a length (chunked) is counted as the app reads it; past ``max_bytes``
   the client gets 413 and the app sees the client gone.

Every early answer carries ``Connection: close``, so the server drops the connection
instead of reading the rest of the body to reach the next request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit"]

Guard = Callable[[Scope], Response | None]


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        guard: Guard | None = None,
        guarded_paths: Sequence[str] = ("/api",),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.guard = guard
        self.guarded_paths = tuple(guarded_paths)

    def _guarded(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.guarded_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.guard is not None and self._guarded(scope["path"]):
            refusal = self.guard(scope)
            if refusal is not None:
                await _answer_and_close(refusal, scope, receive, send)
                return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            size = int(length) if length.isascii() and length.isdigit() else -1
            if size < 0:
                await _answer_and_close(_error(400, "bad Content-Length"), scope, receive, send)
                return
            if size > self.max_bytes:
                await _answer_and_close(self._too_large(), scope, receive, send)
                return
        await self._counted(scope, receive, send)

    def _too_large(self) -> Response:
        return _error(413, f"request body larger than {self.max_bytes} bytes (API_MAX_BODY_BYTES)")

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await _answer_and_close(self._too_large(), scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # our 413 is the answer; whatever the app says after is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status)


async def _answer_and_close(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    response.headers["connection"] = "close"
    await response(scope, receive, send)
