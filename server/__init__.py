"""The HTTP/WebSocket server. ``uvicorn server:app`` serves the voice agent.

``app`` is built on first access, so importing the pure modules in this package (the
frame protocol, the simulator) stays cheap and needs no settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    app: FastAPI


def __getattr__(name: str) -> Any:
    if name == "app":
        from server.application import get_app

        return get_app()
    raise AttributeError(f"module 'server' has no attribute {name!r}")
