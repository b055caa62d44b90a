"""The simulator's look at the server beside the call: what it heard, and why it hung up.

The Stream Node protocol carries no transcript and no reason, so after a call ``voice-agent
call`` asks the same server over HTTP: ``GET /calls/{id}`` (the playground's call history:
the call's events, guarded like ``/voice``, so the stream token from the URL goes along as
a Bearer token) for the caller's words as the server heard them, and ``/health`` when the
server hung up right after the greeting (the usual cause: a stage with neither a key nor
the local models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

LOOKUP_TIMEOUT_S = 3.0
LOCAL_INSTALL = '.venv/bin/pip install -e ".[local]"'


def http_base(ws_url: str) -> str:
    """``wss://host/x/voice/tok?sample_rate=8000`` -> ``https://host/x`` (where the app is)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path
    cut = path.rfind("/voice")
    prefix = path[:cut] if cut >= 0 else ""
    return urlunsplit((scheme, parts.netloc, prefix, "", ""))


async def fetch_json(
    url: str, headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
) -> dict[str, Any] | None:
    """GET a JSON object, or None on any failure (the report then says it is unavailable)."""
    try:
        async with httpx.AsyncClient(timeout=LOOKUP_TIMEOUT_S) as http:
            response = await http.get(url, headers=dict(headers or {}))
        if response.status_code != 200:
            return None
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def stream_token(ws_url: str) -> str | None:
    """The stream token a ``/voice/<token>`` or ``/voice?token=`` URL carries, if any."""
    parts = urlsplit(ws_url)
    tail = parts.path[parts.path.rfind("/voice") + len("/voice") :].strip("/")
    if tail:
        return tail
    tokens = parse_qs(parts.query).get("token")
    return tokens[0] if tokens else None


async def fetch_heard(ws_url: str, call_id: str) -> list[str] | None:
    """Each utterance the server answered, as its STT heard it (None: it would not say)."""
    token = stream_token(ws_url)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    call = await fetch_json(f"{http_base(ws_url)}/calls/{call_id}", headers)
    events = None if call is None else call.get("events")
    if not isinstance(events, list):
        return None
    return heard_in(events)


def heard_in(events: Sequence[Any]) -> list[str]:
    """The caller's words of each turn (``turn_timings`` events; unheard turns were folded
    into the next utterance, so they are left out)."""
    return [
        str(event["user_text"])
        for event in events
        if isinstance(event, dict)
        and event.get("kind") == "turn_timings"
        and event.get("user_text")
        and event.get("outcome") != "unheard"
    ]


async def fetch_health(ws_url: str) -> dict[str, Any] | None:
    return await fetch_json(f"{http_base(ws_url)}/health")


def hung_up_early(
    counts: Mapping[str, int], replies: Sequence[float | None], heard: Sequence[str] | None
) -> bool:
    """The server disconnected without answering the caller (only a greeting or apology).

    ``heard`` (the server's own account, when it gave one) wins over the reply timing.
    """
    if counts.get("disconnect", 0) == 0:
        return False
    if heard is not None:
        return not heard
    return not any(r is not None for r in replies)


def unavailable_hint(health: Mapping[str, Any] | None) -> str:
    """Why a server hangs up right after the greeting, and what fixes it."""
    fix = "set the missing keys in .env, or install the local models: " + LOCAL_INSTALL
    if health is None:
        return f"the server hung up without answering; it may lack speech providers: {fix}"
    stages = health.get("stages")  # stage -> provider name, or None where none runs it
    reasons = health.get("reasons")  # stage -> why
    reasons = reasons if isinstance(reasons, dict) else {}
    missing = [
        f"{stage.upper()}: {reasons.get(stage, 'no provider')}"
        for stage, provider in (stages.items() if isinstance(stages, dict) else [])
        if provider is None
    ]
    if not missing:
        return "the server hung up without answering (its /health shows every stage configured)"
    return "the server cannot run a call: " + "; ".join(missing) + f". Fix: {fix}"
