"""Admission of a ``/voice`` handshake, before any WebSocket is accepted.

Cheapest checks first: draining, the per-address limits (:mod:`server.limits`), stream
authentication when none is configured (:mod:`server.exposure`), the stream token and the
IP allow-list (:mod:`server.security`). A refusal is an HTTP status, never a stream: 403
(who is calling), 429 (too much from one address, with Retry-After) or 503 (we cannot take
it now). Refused handshakes are logged at most once per address and reason per minute,
and repeated authentication failures ban the address for a while.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import lru_cache

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from config.logs import get_logger
from config.settings import StreamSettings
from server.exposure import open_stream_refusal
from server.limits import TokenBucket
from server.security import Network, client_ip, ip_allowed, parse_networks, tokens_match
from server.state import AppState

__all__ = [
    "BUSY_RETRY_AFTER_S",
    "PendingStream",
    "Refusal",
    "UvicornNoiseFilter",
    "access_refusal",
    "admission_refusal",
    "client_address",
    "refuse",
    "uvicorn_noise_filter",
]

log = get_logger("KNOWLARITY")

BUSY_RETRY_AFTER_S = 5  # Retry-After of the 503 for MAX_CALLS and drain refusals
CLOSE_POLICY = 1008  # before accept, uvicorn turns it into an HTTP 403
CLOSE_TRY_LATER = 1013  # before accept on a server without the denial-response extension


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake is refused: 403 (who is calling), 429 (too much from one address)
    or 503 (we cannot take it now). ``auth`` refusals count towards a ban."""

    status: int
    reason: str
    retry_after_s: int = BUSY_RETRY_AFTER_S
    auth: bool = False
    kind: str = ""


class PendingStream:
    """An accepted stream, from the handshake to its end.

    Until its first frame it is *pending*: it counts against its address, sits in the
    pending pool (which may evict it: ``evicted`` is then set) and holds no MAX_CALLS
    slot, so silent sockets cannot fill the slots calls need. Its first frame promotes it
    to a call, which takes a slot.
    """

    def __init__(self, state: AppState, ip: str | None) -> None:
        self._limits, self._pool, self.ip = state.ip_limits, state.pending_pool, ip
        self._calls, self._max_calls = state.lifecycle.calls, state.settings.stream.max_calls
        self._held = True
        self.admitted = False
        self._limits.hold(ip, time.monotonic())
        self.evicted = self._pool.enter(ip)

    def release(self) -> None:
        """No longer pending (idempotent)."""
        if self._held:
            self._held = False
            self._limits.release(self.ip)
            self._pool.leave(self.ip, self.evicted)

    def promote(self) -> bool:
        """The first frame arrived: take a MAX_CALLS slot; False when they are all taken."""
        self.release()
        if not self.admitted:
            self.admitted = self._calls.try_admit(self._max_calls)
        return self.admitted

    def end(self) -> None:
        self.release()
        if self.admitted:
            self.admitted = False
            self._calls.release()


def admission_refusal(
    websocket: WebSocket,
    state: AppState,
    path_token: str | None,
    *,
    ip: str | None = None,
    now: float | None = None,
) -> Refusal | None:
    """The handshake checks, cheapest first; nothing here may log the token."""
    stream = state.settings.stream
    if state.lifecycle.draining:
        return Refusal(503, "the server is shutting down")
    now = time.monotonic() if now is None else now
    verdict = state.ip_limits.check_handshake(ip, now)
    if verdict is not None:
        # A ban gets the cheapest answer uvicorn has (a bare 403); a limit gets 429 and
        # says when to try again.
        status = 403 if verdict.kind == "banned" else 429
        return Refusal(status, verdict.reason, verdict.retry_after_s, kind=verdict.kind)
    given = path_token if path_token is not None else websocket.query_params.get("token")
    return access_refusal(websocket, stream, given, ip)


def access_refusal(
    conn: HTTPConnection, stream: StreamSettings, given: str | None, ip: str | None
) -> Refusal | None:
    """Who may use ``/voice`` (and what is guarded like it, e.g. the playground's feeds):
    stream authentication when none is configured, the stream token, the IP allow-list."""
    peer = conn.client.host if conn.client is not None else None
    unauthenticated = open_stream_refusal(stream, peer, conn.headers.keys())
    if unauthenticated is not None:
        return Refusal(403, unauthenticated, auth=True)
    expected = stream.voice_ws_token
    if (
        expected is not None
        and stream.auth_configured
        and not tokens_match(given, expected.get_secret_value().strip())
    ):
        return Refusal(403, "missing or wrong stream token", auth=True)
    if stream.voice_allowed_ips and not ip_allowed(ip, _networks(stream.voice_allowed_ips)):
        return Refusal(403, f"address {ip or 'unknown'} is not in VOICE_ALLOWED_IPS", auth=True)
    return None


@lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(values)


def client_address(conn: HTTPConnection, stream: StreamSettings) -> str | None:
    """The caller's address: the peer, or X-Forwarded-For from TRUSTED_PROXIES."""
    peer = conn.client.host if conn.client is not None else None
    forwarded = conn.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded, _networks(stream.trusted_proxies))


class UvicornNoiseFilter(logging.Filter):
    """Quiets the uvicorn (websockets-sansio) log lines that any client can trigger.

    - Every WebSocket handshake costs two or three INFO lines ("connection open",
      '"WebSocket /voice/***" [accepted]', "connection rejected (429 ...)", ...): a flood
      of handshakes would be a flood of lines. "connection open/closed" are dropped (our
      own lines say when a call starts and ends); the others pass at most ``burst`` at
      once and ``per_s`` per second after that, and the next one that passes says how
      many were held back.
    - After every denial response (our 503) it logs "ASGI callable returned without
      completing handshake." at ERROR, as it never marks such a handshake complete
      (uvicorn PR #3138); that would trip error alerting. Only the line directly after
      one of our denials is dropped: uvicorn logs it as our handler returns, before the
      loop runs anything else.
    - A text frame with invalid UTF-8 is logged with a full traceback before uvicorn
      closes with 1007. It is the client's bad bytes, not a server fault: the line stays,
      as a warning without the traceback (our handler logs the 1007 under the call id).
    """

    _DENIAL = "ASGI callable returned without completing handshake."
    _BAD_UTF8 = "Invalid UTF-8 sequence received from client."
    _PER_CONNECTION = frozenset({"connection open", "connection closed"})
    _HANDSHAKE = frozenset(
        {
            '%s - "WebSocket %s" [accepted]',
            '%s - "WebSocket %s" 403',
            '%s - "WebSocket %s" %d',
            "connection rejected (%d %s)",
            "HTTP response sent (%d %s)",
        }
    )

    def __init__(self, per_s: float = 5.0, burst: int = 50) -> None:
        super().__init__()
        self.armed = False
        self._handshakes = TokenBucket(per_s, burst, time.monotonic())
        self.held = 0

    def arm(self) -> None:
        self.armed = True
        asyncio.get_running_loop().call_soon(self._disarm)

    def _disarm(self) -> None:
        self.armed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self._PER_CONNECTION:
            return False
        if record.msg in self._HANDSHAKE:
            if not self._handshakes.take(1, time.monotonic()):
                self.held += 1
                return False
            if self.held:
                record.msg = f"{record.msg} (+{self.held} similar lines not logged)"
                self.held = 0
            return True
        if record.msg == self._BAD_UTF8:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif self.armed and record.msg == self._DENIAL:
            self.armed = False
            return False
        return True


uvicorn_noise_filter = UvicornNoiseFilter()


async def refuse(
    websocket: WebSocket, state: AppState, refusal: Refusal, ip: str | None, what: str = "/voice"
) -> None:
    """Refuse before accepting: the Stream Node gets an HTTP status, never a stream.

    ``what`` names the route in the log (never the path itself: it may hold the token)."""
    now = time.monotonic()
    who = ip or (websocket.client.host if websocket.client is not None else "unknown")
    if refusal.auth and state.ip_limits.strike(ip, now):
        log.warning(
            "Banning %s for %.0f s: too many refused /voice handshakes (last: %s)",
            who,
            state.ip_limits.config.ban_s,
            refusal.reason,
        )
    # One line per address and reason per minute, and a few per minute in all: a flood of
    # bad handshakes must not become a flood of log lines.
    allowed, held = state.refusal_log.allow(f"{who}|{refusal.status}|{refusal.kind}", now)
    if allowed:
        more = f" (+{held} similar refusals not logged)" if held else ""
        log.warning(
            "Refused a %s handshake from %s: HTTP %d, %s%s",
            what,
            who,
            refusal.status,
            refusal.reason,
            more,
        )
    if refusal.status == 403:
        await websocket.close(code=CLOSE_POLICY)
        return
    response = PlainTextResponse(
        refusal.reason, refusal.status, headers={"Retry-After": str(refusal.retry_after_s)}
    )
    try:
        await websocket.send_denial_response(response)
        uvicorn_noise_filter.arm()
    except RuntimeError:  # the server lacks the extension: it answers 403 to this instead
        await websocket.close(code=CLOSE_TRY_LATER)
