"""The Cartesia client (``CartesiaTTS``) against the fake API over loopback: every byte
of audio arrives, at the call's rate, and its clocks count audio, not bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from config.settings import CartesiaSettings
from pipeline.providers.base import ProviderError, ProviderTimeout
from pipeline.providers.cartesia_tts import CartesiaTTS
from testkit import FakeCartesia
from testkit.cartesia_script import ErrorEvent, Stall

KEY = "ca-test-key"
TEXT = "Hello there, how can I help you today?"


@pytest.fixture
async def fake() -> AsyncIterator[FakeCartesia]:
    async with FakeCartesia(api_key=KEY, first_audio_ms=30, realtime_factor=20) as server:
        yield server


@pytest.fixture
async def tts(fake: FakeCartesia) -> AsyncIterator[CartesiaTTS]:
    async with httpx.AsyncClient() as http:
        settings = CartesiaSettings(
            api_key=KEY,
            voice_id="voice-1",
            base_url=fake.base_url,
            model="sonic-3",
            version="2025-04-16",
            first_audio_timeout_s=1.0,
            idle_timeout_s=0.3,
        )
        yield CartesiaTTS(settings, http=http)


async def synthesize(tts: CartesiaTTS, rate: int, into: list[bytes] | None = None) -> list[bytes]:
    """The audio pieces, appended to ``into`` as they arrive (kept when a fault raises)."""
    pieces = [] if into is None else into
    async with asyncio.timeout(5):  # a client fooled by a fault would wait forever
        async for pcm in tts.synthesize(TEXT, rate):
            pieces.append(pcm)
    return pieces


async def test_every_audio_byte_arrives_in_order(fake: FakeCartesia, tts: CartesiaTTS) -> None:
    pieces = await synthesize(tts, 16000)
    (record,) = fake.requests
    assert record.completed and record.chunks_sent >= 3
    assert sum(map(len, pieces)) == record.audio_bytes
    assert len(pieces) == record.chunks_sent  # one piece per SSE chunk event


async def test_a_rate_cartesia_lacks_is_rendered_above_and_resampled(
    fake: FakeCartesia, tts: CartesiaTTS
) -> None:
    pieces = await synthesize(tts, 32000)
    (record,) = fake.requests
    assert record.body["output_format"]["sample_rate"] == 44100
    rendered_s = record.audio_bytes / 2 / 44100
    delivered_s = sum(map(len, pieces)) / 2 / 32000
    assert delivered_s == pytest.approx(rendered_s, abs=0.002)


async def test_comments_do_not_keep_a_stalled_stream_alive(
    fake: FakeCartesia, tts: CartesiaTTS
) -> None:
    fake.faults.append(Stall(after_chunks=2, comment_every_s=0.05))
    pieces: list[bytes] = []
    with pytest.raises(ProviderTimeout) as caught:
        await synthesize(tts, 16000, pieces)
    assert caught.value.phase == "idle" and caught.value.retryable
    assert len(pieces) == 2
    (record,) = fake.requests
    await fake.wait_until(lambda: record.disconnected)


async def test_comments_before_any_audio_count_against_first_audio(
    fake: FakeCartesia, tts: CartesiaTTS
) -> None:
    fake.faults.append(Stall(after_chunks=0, comment_every_s=0.05))
    with pytest.raises(ProviderTimeout) as caught:
        await synthesize(tts, 16000)
    assert caught.value.phase == "first_audio"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (400, False)])
async def test_an_error_event_after_audio_ends_the_stream_as_a_provider_error(
    fake: FakeCartesia, tts: CartesiaTTS, status: int, retryable: bool
) -> None:
    fake.faults.append(ErrorEvent(after_chunks=1, status_code=status))
    pieces: list[bytes] = []
    with pytest.raises(ProviderError) as caught:
        await synthesize(tts, 16000, pieces)
    assert len(pieces) == 1
    assert caught.value.retryable is retryable
