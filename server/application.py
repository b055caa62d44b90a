"""The FastAPI application: ``/voice`` for Knowlarity, ``/health`` for operators."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from config.logs import get_logger, mask_logger, setup_logging
from config.settings import Settings, get_settings
from kpi.routes import build_router
from kpi.service import KpiService
from pipeline.agent import AgentConfig
from pipeline.agent_file import AgentFile
from pipeline.providers.base import ProviderError
from pipeline.speech_cache import warm_lines
from server import local_stack
from server.call_summary import build_summary_router
from server.providers import build_providers, choose
from server.security import UrlRedactingFilter
from server.state import AppState
from server.voice import handle_call, uvicorn_noise_filter

log = get_logger("SERVER")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings.server.log_level, settings.secrets())
    _tame_uvicorn_logs()
    local_stack.register()  # the keyless mode's builders, where the local extra is installed
    choices = choose(settings)
    agent_file = local_stack.load_agent(settings, choices)  # AgentFileError: file and line

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            timeout=httpx.Timeout(10.0, connect=3.0),
        )
        agent = AgentConfig.from_settings(settings.agent)
        if agent_file is not None:
            agent = agent_file.apply(agent)
        providers = build_providers(settings, http, choices)
        state = AppState(
            settings=settings, agent=agent, providers=providers, http=http, choices=choices
        )
        app.state.voice = state
        kpi = KpiService(settings.knowlarity, state.registry, http=http)
        app.state.kpi = kpi
        await kpi.start()
        _announce_providers(state, agent_file)
        if state.providers.tts is not None or local_stack.needs_warming(state.providers):
            state.spawn(_warm(state), name="warm-cache")
        else:
            state.greeting_warmed.set()  # nothing to warm: ready at once
        state.spawn(_watch_loop_lag(state.loop_lag_ms), name="loop-lag")
        _announce_stream_security(settings)
        if state.lifecycle.install_signal_handlers(settings.server.drain_seconds):
            log.info(
                "SIGTERM drains calls for up to %.1f s (DRAIN_SECONDS)",
                settings.server.drain_seconds,
            )
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
                "deepgram": settings.deepgram.configured,
                "openai": settings.openai.configured,
                "cartesia": settings.cartesia.configured,
            },
            "stages": {stage: choice.provider for stage, choice in state.choices.items()},
            "missing": state.missing(),
            "reasons": {stage: choice.reason for stage, choice in state.choices.items()},
            "agent_file": None if agent_file is None else str(agent_file.path),
            "local": local_stack.stats(state.providers),
            "active_calls": len(state.registry.active()),
            "draining": state.lifecycle.draining,
            "cached_lines": len(state.providers.cache),
            "loop_lag_ms": _lag_summary(state.loop_lag_ms),
        }

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """For load balancers and Kubernetes: 503 while warming, draining or at MAX_CALLS."""
        state: AppState = request.app.state.voice
        calls = state.lifecycle.calls.connections
        if state.lifecycle.draining:
            status = "draining"
        elif state.missing():
            status = "unavailable"  # a stage has no provider: calls would only hear an apology
        elif not state.greeting_warmed.is_set():
            status = "warming"  # the first calls would pay a TTS round trip for the greeting
        elif calls >= settings.stream.max_calls:
            status = "full"
        else:
            status = "ready"
        body = {"status": status, "active_calls": calls, "max_calls": settings.stream.max_calls}
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    def get_kpi() -> KpiService:
        service: KpiService = app.state.kpi
        return service

    app.include_router(build_router(get_kpi))
    app.include_router(build_summary_router())

    @app.websocket("/voice")
    async def voice(websocket: WebSocket) -> None:
        await handle_call(websocket, websocket.app.state.voice)

    # The Stream Node takes only a wss-url, so the stream token may travel in the path.
    @app.websocket("/voice/{token}")
    async def voice_with_token(websocket: WebSocket, token: str) -> None:
        await handle_call(websocket, websocket.app.state.voice, path_token=token)

    return app


def _tame_uvicorn_logs() -> None:
    """Uvicorn logs through its own handlers, which our root-handler filter never sees:
    redact stream tokens in its URLs, mask secrets, quiet two client-triggered lines."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        # URLs first: the access formatter needs record.args, which the secret mask
        # would drop if it found the token still in the message.
        if not any(isinstance(f, UrlRedactingFilter) for f in logger.filters):
            logger.addFilter(UrlRedactingFilter())
        mask_logger(name)
    error_log = logging.getLogger("uvicorn.error")
    if uvicorn_noise_filter not in error_log.filters:
        error_log.addFilter(uvicorn_noise_filter)


def _announce_providers(state: AppState, agent_file: AgentFile | None) -> None:
    """One line per stage: what runs it and why (never a key)."""
    for choice in state.choices.values():
        if choice.provider is None:
            log.warning("%s: none (%s)", choice.stage.upper(), choice.reason)
        else:
            log.info("%s: %s (%s)", choice.stage.upper(), choice.provider, choice.reason)
    if state.providers.missing():
        spoken = "hear an apology" if state.providers.tts is not None else "be disconnected"
        log.warning(
            "Starting without %s: calls will %s",
            "/".join(state.providers.missing()),
            spoken,
        )
    if agent_file is not None:
        log.info(
            "Agent file %s: %s, %d FAQ entries, transfers %s",
            agent_file.path,
            agent_file.name,
            len(agent_file.faq),
            f"to {agent_file.transfer_number}" if agent_file.transfer_number else "off",
        )


def _announce_stream_security(settings: Settings) -> None:
    if not settings.stream.auth_configured:
        log.warning("VOICE_WS_TOKEN is not set: anyone who finds /voice can open a stream")
    if settings.stream.voice_allowed_ips:
        log.info("Streams only from %s", ", ".join(settings.stream.voice_allowed_ips))


async def _warm(state: AppState) -> None:
    """Load the local models, then cache the fixed lines (the greeting first: calls wait on it)."""
    started = time.monotonic()
    if local_stack.needs_warming(state.providers):
        try:
            await local_stack.warm(state.providers)
        except Exception:  # a broken install: say so; calls then fail loudly, not silently
            log.exception("Warming the local models failed")
    tts = state.providers.tts
    if tts is None:
        state.greeting_warmed.set()
        return
    cache = state.providers.cache
    # A server that cannot run a call greets nobody: its first words are the apology.
    first = state.agent.unavailable_line if state.missing() else state.agent.greeting
    try:
        await cache.warm(tts, first, state.settings.stream.sample_rate)
    except ProviderError as exc:
        log.error("Could not cache the greeting (%s); calls will synthesise it live", exc)
    finally:
        state.greeting_warmed.set()
    rates = sorted({state.settings.stream.sample_rate, 8000, 16000})
    await warm_lines(cache, tts, state.agent.fixed_lines(), rates)
    log.info("Cached %d fixed lines in %.0f ms", len(cache), (time.monotonic() - started) * 1000)


@lru_cache(maxsize=1)
def get_app() -> FastAPI:
    return create_app()


LAG_PERIOD_S = 0.1


async def _watch_loop_lag(samples: collections.deque[float]) -> None:
    """How late the event loop wakes a 100 ms sleep: the delay every callback sees."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_PERIOD_S)
        samples.append((time.monotonic() - started - LAG_PERIOD_S) * 1000)


def _lag_summary(samples: collections.deque[float]) -> dict[str, float | None]:
    ordered = sorted(samples)  # the last 600 samples: one minute
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(ordered[len(ordered) // 2], 2),
        "p99": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)], 2),
        "max": round(ordered[-1], 2),
    }
