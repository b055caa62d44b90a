"""The browser playground: the page at ``GET /``, its assets, call history and event feeds.

The page (``server/web/``, plain ES modules and an AudioWorklet, no build step) is one
more Stream Node: it speaks the Knowlarity protocol to ``/voice`` itself. What the wire
protocol does not carry (transcripts, turn timings, barge-ins) it reads from
``/calls/{id}/events`` (:mod:`server.call_feed`); the history view reads ``GET /calls``
and ``GET /calls/{id}`` (from the call records store when records are on, see
:mod:`server.records_history`). Those three are guarded like ``/voice``: the stream token
(``Authorization: Bearer`` on HTTP, ``?token=`` on the WebSocket) and the IP allow-list.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from config.logs import get_logger
from config.settings import Settings
from server.admission import access_refusal, client_address
from server.call_feed import CallFeeds
from server.call_history import CallHistory, HubHistory
from server.operations import Operations
from server.records_history import RecordsHistory
from server.state import AppState
from server.worker_relay import WorkerRelay, relay_dir
from server.workers import worker_index

__all__ = ["PAGE_HEADERS", "WEB_DIR", "history_source", "install_playground"]

log = get_logger("PLAYGROUND")

WEB_DIR = Path(__file__).with_name("web")
SAMPLE_RATES = (8000, 16000)  # what the page offers; the Stream Node's common rates
HISTORY_LIMIT = 200

# Everything the page loads is its own: no CDN, no inline script, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def history_source(app: FastAPI) -> CallHistory:
    """The call records store when records are on, with memory beside it for the calls it
    has not caught up with; else memory alone: the event hubs (this process's, and under
    ``--workers`` its siblings' through the relay)."""
    relay: WorkerRelay | None = getattr(app.state, "worker_relay", None)
    state: AppState = app.state.voice
    memory: CallHistory = relay if relay is not None else HubHistory(state.events)
    ops: Operations | None = getattr(app.state, "ops", None)
    if ops is not None and ops.store is not None:
        return RecordsHistory(ops.store, memory)
    return memory


def _with_worker_relay(app: FastAPI, feeds: CallFeeds) -> None:
    """Under ``voice-agent serve --workers N``, answer and ask the sibling workers.

    Wraps the app's lifespan (rather than editing it) so the relay starts once the hub
    exists and stops before it goes.
    """
    index = worker_index()
    if index is None:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as value:
            state: AppState = app.state.voice
            relay = WorkerRelay(state.events, relay_dir(os.getppid()), index)
            if await relay.start():
                app.state.worker_relay = feeds.relay = relay
            try:
                yield value
            finally:
                app.state.worker_relay = feeds.relay = None
                await relay.aclose()

    app.router.lifespan_context = lifespan


def _guard(request: Request) -> None:
    stream = request.app.state.voice.settings.stream
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    given = credentials.strip() if scheme.lower() == "bearer" else None
    refusal = access_refusal(request, stream, given, client_address(request, stream))
    if refusal is not None:
        log.warning("Refused %s: HTTP %d, %s", request.url.path, refusal.status, refusal.reason)
        raise HTTPException(refusal.status, refusal.reason)


def install_playground(app: FastAPI, settings: Settings) -> None:
    if not settings.server.playground_enabled:
        return
    feeds = CallFeeds(limit=settings.stream.max_calls)
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)

    @router.get("/playground/config")
    async def config(request: Request) -> dict[str, Any]:
        state: AppState = request.app.state.voice
        default = state.settings.stream.sample_rate
        return {
            "token_required": state.settings.stream.auth_configured,
            "sample_rates": list(SAMPLE_RATES),
            "default_sample_rate": default if default in SAMPLE_RATES else 16000,
            "history_source": history_source(request.app).name,
        }

    @router.get("/calls")
    async def recent_calls(
        request: Request, limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT)] = 50
    ) -> dict[str, Any]:
        _guard(request)
        source = history_source(request.app)
        rows = await source.recent(limit)
        return {"source": source.name, "calls": [row.to_dict() for row in rows]}

    @router.get("/calls/{call_id}")
    async def one_call(request: Request, call_id: str) -> dict[str, Any]:
        _guard(request)
        detail = await history_source(request.app).detail(call_id)
        if detail is None:
            raise HTTPException(404, f"no call {call_id!r} in the history")
        return detail.to_dict()

    @router.websocket("/calls/{call_id}/events")
    async def call_events(websocket: WebSocket, call_id: str) -> None:
        state: AppState = websocket.app.state.voice
        await feeds.serve(websocket, state.events, call_id)

    app.include_router(router)
    app.state.call_feeds = feeds
    _with_worker_relay(app, feeds)
    app.mount("/playground", StaticFiles(directory=WEB_DIR), name="playground")
