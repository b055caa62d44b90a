"""Start-up behaviour: /health, the greeting cache, and calls that arrive without keys."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from server.application import create_app
from streamnode.client import StreamNodeClient
from testkit import DEFAULT_KEYS, AppServer, FakeProviders
from tests.conftest import StartServer, make_settings


async def test_health_reports_providers_without_keys(start_server: StartServer) -> None:
    # Pinned to the cloud providers: with auto, the local models would fill these stages.
    server = await start_server(
        deepgram_api_key="", cartesia_voice_id="", stt_provider="deepgram", tts_provider="cartesia"
    )
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["providers"] == {"deepgram": False, "openai": True, "cartesia": False}
    assert set(body["missing"]) == {"DEEPGRAM_API_KEY", "CARTESIA_VOICE_ID"}
    for secret in DEFAULT_KEYS.values():
        assert secret not in response.text


async def test_cached_greeting_costs_no_tts_round_trip(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(greeting="Welcome to the bank.")
    cache = server.state.providers.cache
    async with asyncio.timeout(10):
        while len(cache) < len(server.state.agent.fixed_lines()) * 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    before = len(fakes.cartesia.requests)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-cached"})
        await node.wait_for("playAudio", timeout=5)
    assert len(fakes.cartesia.requests) == before


async def test_call_without_keys_is_logged_and_handed_back(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(
        deepgram_api_key="", openai_api_key="", stt_provider="deepgram", llm_provider="openai"
    )
    caplog.set_level(logging.INFO)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-nokeys"})
        await node.wait_for("disconnect", timeout=10)
    plays = [e for e in node.events if e.kind == "playAudio"]
    assert plays, "the caller hears the apology before the IVR takes over"
    messages = [r.getMessage() for r in caplog.records]
    assert any("DEEPGRAM_API_KEY" in m and "OPENAI_API_KEY" in m for m in messages)


async def test_ready_waits_for_the_cached_greeting(fakes: FakeProviders) -> None:
    fakes.cartesia.first_audio_ms = 400  # a slow TTS at start-up: readiness must wait for it
    app = create_app(make_settings(fakes.env(), greeting="Welcome to the bank."))
    async with (
        AppServer(app, lifespan="on", ws="websockets-sansio") as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        first = await client.get("/ready")
        await asyncio.wait_for(app.state.voice.greeting_warmed.wait(), 10)
        second = await client.get("/ready")
        health = (await client.get("/health")).json()
    assert (first.status_code, first.json()["status"]) == (503, "warming")
    assert (second.status_code, second.json()["status"]) == (200, "ready")
    assert set(health["loop_lag_ms"]) == {"p50", "p99", "max"}
