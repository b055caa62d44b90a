"""A streaming HTTP response driven by a producer coroutine, stopped when the client leaves.

Starlette's ``StreamingResponse`` iterates an async generator; when the client goes away
the generator is abandoned mid-``yield`` and only finalized later by the garbage
collector. Here the producer is an ordinary coroutine run as a task next to a disconnect
watcher: whichever finishes first cancels the other, and both are awaited before the
response returns, so nothing outlives the request and the producer sees a plain
``CancelledError`` at the ``await`` where it was waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["Emit", "ProducerResponse", "sse_event"]

Emit = Callable[[bytes], Awaitable[None]]
Producer = Callable[[Emit], Coroutine[Any, Any, None]]


def sse_event(data: str) -> bytes:
    """One data-only Server-Sent Event (``data: ...\\n\\n``)."""
    return b"data: " + data.encode() + b"\n\n"


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ProducerResponse(Response):
    def __init__(
        self,
        producer: Producer,
        *,
        status_code: int = 200,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self._producer = producer
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        produce = asyncio.create_task(self._producer(emit))
        watch = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((produce, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            produce.cancel()
            watch.cancel()
            await asyncio.gather(produce, watch, return_exceptions=True)
        if produce.cancelled():
            return  # the client left
        produce.result()  # re-raise a producer bug
        await send({"type": "http.response.body", "body": b"", "more_body": False})
