"""``GET /calls/{call_id}/summary``: what the server heard on a call, as small JSON.

The Knowlarity wire format has no place for transcripts, so the simulator (``voice-agent
call``) reads the caller's words as the server heard them from here, out of the app's
call event hub. Transcripts are personal data, so:

- with ``Authorization: Bearer ADMIN_API_TOKEN`` any recent call is readable;
- without it, only simulated calls are: their ids (``sim-`` + 64 random bits) are made by
  the simulator and known only to whoever placed the call. Real Knowlarity calls answer
  404 exactly like unknown ones, so the route reveals nothing about them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from pipeline.events import TurnTimings
from server.security import tokens_match
from server.state import AppState

SIMULATED_PREFIX = "sim-"


def build_summary_router() -> APIRouter:
    router = APIRouter(tags=["calls"])

    @router.get("/calls/{call_id}/summary")
    async def call_summary(call_id: str, request: Request) -> dict[str, Any]:
        state: AppState = request.app.state.voice
        known = state.events.known(call_id) or state.registry.get(call_id) is not None
        if not known or not _may_read(request, state, call_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such call")
        return summarise(state, call_id)

    return router


def _may_read(request: Request, state: AppState, call_id: str) -> bool:
    token = state.settings.knowlarity.admin_api_token
    expected = token.get_secret_value().strip() if token is not None else ""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if expected and scheme.lower() == "bearer" and tokens_match(given.strip(), expected):
        return True
    return call_id.startswith(SIMULATED_PREFIX)


def summarise(state: AppState, call_id: str) -> dict[str, Any]:
    heard = [
        event.user_text
        for event in state.events.history(call_id)
        if isinstance(event, TurnTimings) and event.user_text and event.outcome != "unheard"
    ]
    record = state.registry.get(call_id)
    return {
        "call_id": call_id,
        "heard": heard,  # each utterance the server answered (a turn), as its STT heard it
        "turn_latencies_ms": list(record.turn_latencies_ms) if record else [],
        "transferred_to": record.transferred_to if record else None,
        "active": record.active if record else False,
        "providers": {stage: choice.provider for stage, choice in state.choices.items()},
    }
