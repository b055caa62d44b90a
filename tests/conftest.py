"""Shared fixtures: the provider fakes and our server, both on loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from config.settings import Settings
from server.application import create_app
from server.state import AppState
from testkit import AppServer, FakeProviders

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def make_settings(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings from an env-style dict, ignoring any .env file and the real environment."""
    values: dict[str, Any] = {key.lower(): value for key, value in env.items()}
    values.update(overrides)
    return Settings(_env_file=None, **values)


class VoiceServer:
    """Our app served by uvicorn on loopback, lifespan and WebSockets on, as users run it."""

    def __init__(self, app: FastAPI, server: AppServer) -> None:
        self.app = app
        self._server = server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.port}/voice"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.voice
        return state


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        yield providers


StartServer = Callable[..., Any]


@pytest.fixture
async def start_server(fakes: FakeProviders) -> AsyncIterator[StartServer]:
    """Call ``await start_server(**setting_overrides)`` to get a running VoiceServer."""
    servers: list[AppServer] = []

    async def start(**overrides: Any) -> VoiceServer:
        app = create_app(make_settings(fakes.env(), **overrides))
        server = AppServer(app, lifespan="on", ws="websockets-sansio")
        await server.start()
        servers.append(server)
        return VoiceServer(app, server)

    yield start
    for server in reversed(servers):
        await server.stop()
