"""Secure by default: who may reach ``/voice`` when no stream authentication is set.

With neither ``VOICE_WS_TOKEN`` nor ``VOICE_ALLOWED_IPS``:

- binding a non-loopback address refuses to start (``voice-agent serve`` exits 2,
  ``uvicorn server:app`` exits 3), with one line that says what to set, unless the
  operator opts out with ``VOICE_AUTH=none``;
- even on loopback, a handshake that did not come straight from this machine is refused
  (403): one from another address, or one relayed by a local proxy such as the ngrok
  agent (it connects from 127.0.0.1 and adds ``X-Forwarded-For``). ngrok puts a loopback
  server on the internet, so it needs the token too.

Local development (the simulator, the browser playground on localhost) needs nothing.
For a bare ``uvicorn server:app`` the app also finds uvicorn's own options at start-up
and applies ``MAX_FRAME_BYTES`` to them, or warns about ``TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from config.settings import StreamSettings

__all__ = [
    "StartupGuard",
    "is_local_request",
    "is_loopback_host",
    "open_stream_refusal",
    "running_uvicorn",
    "stream_auth_problem",
    "uvicorn_option_problems",
]

# Headers a relaying proxy adds; a "local" request carries none of them.
_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host")


def is_loopback_host(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``: reachable from this machine only."""
    text = host.strip().strip("[]").lower()
    if text == "localhost":
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def stream_auth_problem(host: str | None, stream: StreamSettings) -> str | None:
    """Why the server must not start on ``host`` (one line), or None. ``None`` host: unknown."""
    if stream.voice_auth == "none" or _stream_auth_configured(stream):
        return None
    if host is None or is_loopback_host(host):
        return None
    return (
        f"refusing to serve /voice on {host} without stream authentication: set "
        "VOICE_WS_TOKEN (and/or VOICE_ALLOWED_IPS), or VOICE_AUTH=none to run it open "
        "on purpose"
    )


def is_local_request(peer: str | None, header_names: Iterable[str]) -> bool:
    """From this machine, and not relayed by a proxy (ngrok, nginx) running on it."""
    if peer is None or not is_loopback_host(peer):
        return False
    names = {name.lower() for name in header_names}
    return not any(header in names for header in _FORWARDING_HEADERS)


def open_stream_refusal(
    stream: StreamSettings, peer: str | None, header_names: Iterable[str]
) -> str | None:
    """With no stream authentication configured, only local handshakes are served."""
    if stream.voice_auth == "none" or _stream_auth_configured(stream):
        return None
    if is_local_request(peer, header_names):
        return None
    return "stream authentication is not configured (VOICE_WS_TOKEN); only local callers"


def _stream_auth_configured(stream: StreamSettings) -> bool:
    return stream.auth_configured or bool(stream.voice_allowed_ips)


# --- uvicorn ---------------------------------------------------------------------------


def running_uvicorn() -> uvicorn.Server | None:
    """The uvicorn server running this process, found through the SIGTERM handler it
    installs while it serves (uvicorn and ``voice-agent serve``; not embedded servers)."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return server if isinstance(server, uvicorn.Server) else None


def uvicorn_bind_host(server: uvicorn.Server) -> str | None:
    """The address uvicorn binds, or None when it is handed a socket (fd, or a parent's)."""
    config = server.config
    if config.uds:
        return "localhost"  # a unix socket: reachable through the file system only
    if config.fd is not None:
        return None
    return str(config.host)


def uvicorn_option_problems(server: uvicorn.Server, stream: StreamSettings) -> list[str]:
    """Bring uvicorn's options in line with ours; what could not be applied, one line each.

    ``ws_max_size`` is read by each new WebSocket connection, so setting it now (before
    the first one) lets the WebSocket layer refuse an oversized frame after its header.
    The proxy list is baked into uvicorn's middleware when it loads the app: only a
    warning can help there.
    """
    config = server.config
    problems = []
    if config.ws_max_size != stream.max_frame_bytes:
        config.ws_max_size = stream.max_frame_bytes
    if config.proxy_headers:
        theirs = _hosts(config.forwarded_allow_ips)
        ours = set(stream.trusted_proxies)
        if theirs != ours:
            problems.append(
                f"uvicorn believes X-Forwarded-For from {', '.join(sorted(theirs)) or 'nobody'} "
                f"but TRUSTED_PROXIES is {', '.join(sorted(ours)) or 'empty'}: start it with "
                f'--forwarded-allow-ips "{",".join(sorted(ours))}" (voice-agent serve does this)'
            )
    return problems


def _hosts(value: Any) -> set[str]:
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return {str(item).strip() for item in items if str(item).strip()}


class StartupGuard:
    """Outermost ASGI layer: fail the lifespan start-up with one line when ``check``
    returns a problem, before the app (and uvicorn's listening socket) starts at all."""

    def __init__(self, app: ASGIApp, check: Callable[[], str | None]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            problem = self.check()
            if problem is not None:
                message: Mapping[str, Any] = await receive()  # lifespan.startup
                if message.get("type") == "lifespan.startup":
                    await send({"type": "lifespan.startup.failed", "message": problem})
                    return
        await self.app(scope, receive, send)
