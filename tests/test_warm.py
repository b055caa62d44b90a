"""Warm connections: opened before the first turn, re-used by it, kept between turns."""

from __future__ import annotations

import httpx
import pytest

from config.settings import CartesiaSettings, OpenAISettings
from pipeline.providers.cartesia_tts import CartesiaTTS
from pipeline.providers.openai_llm import OpenAILLM
from pipeline.providers.warm import warm_providers
from testkit import FakeProviders
from tests.conftest import StartServer, free_port


def _tts(fakes: FakeProviders, http: httpx.AsyncClient, base_url: str | None = None) -> CartesiaTTS:
    env = fakes.env()
    settings = CartesiaSettings(
        api_key=env["CARTESIA_API_KEY"],
        voice_id=env["CARTESIA_VOICE_ID"],
        base_url=base_url or env["CARTESIA_BASE_URL"],
    )
    return CartesiaTTS(settings, http=http)


def _llm(fakes: FakeProviders, base_url: str | None = None) -> OpenAILLM:
    env = fakes.env()
    settings = OpenAISettings(
        api_key=env["OPENAI_API_KEY"], base_url=base_url or env["OPENAI_BASE_URL"]
    )
    return OpenAILLM(settings, keepalive_s=30)


async def test_warm_tts_connections_are_reused_by_the_first_sentence(
    fakes: FakeProviders,
) -> None:
    async with httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=30)) as http:
        tts = _tts(fakes, http)
        assert await tts.warm_connections(2) == 2
        assert (fakes.cartesia.status_requests, fakes.cartesia.connections_opened) == (2, 2)
        audio = b"".join([pcm async for pcm in tts.synthesize("Hello there.", 16000)])
        assert audio
        (request,) = fakes.cartesia.requests
        assert request.new_connection is False
        assert fakes.cartesia.connections_opened == 2


async def test_warm_llm_connections_are_reused_by_the_first_turn(fakes: FakeProviders) -> None:
    llm = _llm(fakes)
    try:
        assert await llm.warm_connections(2) == 2
        assert (fakes.openai.model_requests, fakes.openai.connections_opened) == (2, 2)
        events = [event async for event in llm.stream([{"role": "user", "content": "hi"}], [])]
        assert events
        (request,) = fakes.openai.requests
        assert request.new_connection is False
    finally:
        await llm.aclose()


async def test_without_warming_the_first_requests_open_connections(fakes: FakeProviders) -> None:
    llm = _llm(fakes)
    async with httpx.AsyncClient() as http:
        try:
            [event async for event in llm.stream([{"role": "user", "content": "hi"}], [])]
            [pcm async for pcm in _tts(fakes, http).synthesize("Hello there.", 16000)]
        finally:
            await llm.aclose()
    assert fakes.openai.requests[0].new_connection is True
    assert fakes.cartesia.requests[0].new_connection is True


async def test_an_unreachable_provider_warms_nothing_and_raises_nothing(
    fakes: FakeProviders,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    llm = _llm(fakes, base_url=dead + "/v1")
    async with httpx.AsyncClient() as http:
        try:
            counts = await warm_providers([llm, _tts(fakes, http, dead), object()], 2)
        finally:
            await llm.aclose()
    assert counts == {"openai": 0, "cartesia": 0}


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_server_warms_before_ready_and_first_turn_needs_no_new_connection(
    transport: str, fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(
        warm_connections=2, warm_interval_s=60, cartesia_transport=transport
    )
    await server.state.connections_warmed.wait()
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/ready")).json()["status"] == "ready"
        health = (await http.get("/health")).json()
    assert fakes.openai.model_requests == 2
    if transport == "sse":
        assert fakes.cartesia.status_requests == 2
        assert health["tts"] == {"transport": "sse"}
    else:  # one socket, opened before /ready; no HTTP request
        assert (fakes.cartesia.status_requests, fakes.cartesia.sockets_opened) == (0, 1)
        assert health["tts"] == {
            "transport": "websocket",
            "open_sockets": 1,
            "opened": 1,
            "reopening": False,
        }
    llm = server.state.providers.llm
    assert llm is not None
    [event async for event in llm.stream([{"role": "user", "content": "hi"}], [])]
    assert fakes.openai.requests[-1].new_connection is False


async def test_warming_off_is_ready_without_warm_requests(
    fakes: FakeProviders, start_server: StartServer
) -> None:
    server = await start_server(warm_connections=0)
    assert server.state.connections_warmed.is_set()
    assert fakes.openai.model_requests == 0
    assert fakes.cartesia.status_requests == 0
