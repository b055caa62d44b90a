"""The FastAPI application: ``/voice`` for Knowlarity, ``/health`` for operators."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket

from config.logs import get_logger, setup_logging
from config.settings import Settings, get_settings
from kpi.routes import build_router
from kpi.service import KpiService
from pipeline.agent import AgentConfig
from pipeline.speech_cache import warm_lines
from server.providers import build_providers
from server.state import AppState
from server.voice import handle_call

log = get_logger("SERVER")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings.log_level, settings.secrets())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            timeout=httpx.Timeout(10.0, connect=3.0),
        )
        agent = AgentConfig.from_settings(settings)
        state = AppState(
            settings=settings, agent=agent, providers=build_providers(settings, http), http=http
        )
        app.state.voice = state
        kpi = KpiService(settings, state.registry)
        app.state.kpi = kpi
        await kpi.start()
        missing = settings.missing_providers()
        if missing:
            log.warning(
                "Starting without %s: calls will be told the agent is unavailable",
                ", ".join(missing),
            )
        tts = state.providers.tts
        if tts is not None:
            state.spawn(_warm(state), name="warm-cache")
        try:
            yield
        finally:
            await kpi.aclose()
            await state.aclose()

    app = FastAPI(title="Knowlarity voice agent", version="0.1.0", lifespan=lifespan)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        state: AppState = request.app.state.voice
        return {
            "status": "ok",
            "providers": {
                "deepgram": settings.stt_configured,
                "openai": settings.llm_configured,
                "cartesia": settings.tts_configured,
            },
            "missing": settings.missing_providers(),
            "active_calls": len(state.registry.active()),
            "cached_lines": len(state.providers.cache),
        }

    def get_kpi() -> KpiService:
        service: KpiService = app.state.kpi
        return service

    app.include_router(build_router(get_kpi))

    @app.websocket("/voice")
    async def voice(websocket: WebSocket) -> None:
        await handle_call(websocket, websocket.app.state.voice)

    return app


async def _warm(state: AppState) -> None:
    tts = state.providers.tts
    assert tts is not None
    started = time.monotonic()
    rates = sorted({state.settings.sample_rate, 8000, 16000})
    await warm_lines(state.providers.cache, tts, state.agent.fixed_lines(), rates)
    log.info(
        "Cached %d fixed lines in %.0f ms",
        len(state.providers.cache),
        (time.monotonic() - started) * 1000,
    )


@lru_cache(maxsize=1)
def get_app() -> FastAPI:
    return create_app()
