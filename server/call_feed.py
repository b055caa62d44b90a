"""``/calls/{call_id}/events``: one call's events, read-only, as JSON text frames.

The playground opens it beside its ``/voice`` stream, so the Knowlarity wire format stays
exactly as the seed defines it while the page still learns what the server heard, what
the agent said and how long each stage took. Its handshake is admitted exactly like
``/voice``'s (:mod:`server.admission`: stream token in ``?token=``, IP allow-list,
per-address limits, local-only without authentication). It replays the call's events so
far, follows it live, and closes with 1000 after ``call_ended``. A feed for a call that
never starts closes after ``idle_s``; the number of open feeds is capped. Under
``--workers`` a call held by another worker is relayed from it (:mod:`server.worker_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.logs import call_id_var, get_logger
from pipeline.aio import cancel_and_wait
from pipeline.events import CallEnded, CallEvent, CallEventHub, event_to_dict
from server.admission import admission_refusal, client_address, refuse
from server.worker_relay import WorkerRelay

__all__ = ["FEED_IDLE_S", "CallFeeds"]

log = get_logger("PLAYGROUND")

FEED_IDLE_S = 30.0  # no event at all for this long: the call id is wrong, stop waiting
CLOSE_TRY_LATER = 1013
RELAY_POLL_S = 0.1  # with sibling workers: how often to ask them for a call not held here


class CallFeeds:
    """Serves event feeds and counts the open ones (bounded, like calls)."""

    def __init__(self, limit: int, idle_s: float = FEED_IDLE_S) -> None:
        self.limit = limit
        self.idle_s = idle_s
        self.open = 0
        self.relay: WorkerRelay | None = None  # set in a --workers worker

    async def serve(self, websocket: WebSocket, hub: CallEventHub, call_id: str) -> None:
        state = websocket.app.state.voice
        ip = client_address(websocket, state.settings.stream)
        refusal = admission_refusal(websocket, state, None, ip=ip)  # exactly /voice's rules
        if refusal is not None:
            await refuse(websocket, state, refusal, ip, what="event feed")
            return
        await websocket.accept()
        if self.open >= self.limit:
            log.warning("Refused an event feed: %d feeds open (limit %d)", self.open, self.limit)
            await websocket.close(CLOSE_TRY_LATER, "too many event feeds")
            return
        self.open += 1
        context = call_id_var.set(call_id)
        sender = asyncio.create_task(self._send(websocket, hub, call_id), name="call-feed-send")
        watcher = asyncio.create_task(_until_closed(websocket), name="call-feed-watch")
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(sender)
            await cancel_and_wait(watcher)
            self.open -= 1
            if websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await websocket.close(1000)
            call_id_var.reset(context)

    async def _send(self, websocket: WebSocket, hub: CallEventHub, call_id: str) -> None:
        events = self._events(hub, call_id)
        try:
            async for event in events:
                await websocket.send_text(json.dumps(event))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the page went away mid-send
        finally:
            await events.aclose()  # its subscription (or relayed socket) ends with the feed

    async def _events(
        self, hub: CallEventHub, call_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The call's events from this process's hub, or from the worker that holds it."""
        local = hub.subscribe(call_id)  # from now on, nothing of a local call is missed
        first: asyncio.Task[CallEvent] = asyncio.create_task(anext(local), name="call-feed-first")
        try:
            deadline = time.monotonic() + self.idle_s
            while not first.done():
                remote = await self.relay.open_feed(call_id) if self.relay else None
                if remote is not None:
                    try:
                        async for data in remote:
                            yield data
                    finally:
                        await remote.aclose()
                    return
                if time.monotonic() >= deadline:
                    log.info("Event feed closed: no event for %.0f s", self.idle_s)
                    return
                await asyncio.wait({first}, timeout=RELAY_POLL_S if self.relay else self.idle_s)
            event = first.result()
            while True:
                yield event_to_dict(event)
                if isinstance(event, CallEnded):
                    return
                event = await anext(local)
        finally:
            await cancel_and_wait(first)
            await local.aclose()


async def _until_closed(websocket: WebSocket) -> None:
    """The page sends nothing; read until it closes (or sends something, ignored)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
