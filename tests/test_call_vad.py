"""The local VAD in a call: silero on the caller's real audio pauses the bot at the
speech onset, whatever the recogniser says (virtual time; the silero model runs for real,
in its worker thread, which takes no virtual time)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from audio.speech_segmenter import SpeechEvent, SpeechEventKind
from audio.vad import SileroVadModel, VoiceActivityDetector
from pipeline.call.inbox import QUIET_DBFS
from pipeline.events import BargeIn
from pipeline.turntaking.config import TurnTakingConfig
from testkit.virtual_time import run_virtual
from tests.caller import fixture_pcm
from tests.test_call_core import LONG, Rig, call

FRAME = 640  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def vad() -> SileroVadModel:
    model = SileroVadModel()
    model.warm((16000,))  # loaded: no load inside the call
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
        speech = fixture_pcm("question.wav")  # 0.3 s of silence, then 1.6 s of a question
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
        assert 0 < rig.session.voice.scored < rig.session.voice.windows

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


def test_the_quiet_gate_skips_hiss_and_hears_speech_the_same(vad: SileroVadModel) -> None:
    rng = np.random.default_rng(5)
    speech = fixture_pcm("question.wav") + bytes(32000)  # 0.3 s silence, speech, 1 s silence
    samples = np.frombuffer(speech, dtype="<i2").astype(np.float32)
    hiss = rng.standard_normal(samples.size) * 32768 * 10 ** (-65 / 20)
    pcm = np.clip(samples + hiss, -32768, 32767).astype("<i2").tobytes()
    settings = TurnTakingConfig().vad
    heard = {}
    for gate in (None, QUIET_DBFS):
        detector = VoiceActivityDetector(vad, 16000, settings, quiet_dbfs=gate)

        async def push_all(detector: VoiceActivityDetector = detector) -> list[SpeechEvent]:
            return [
                e
                for i in range(0, len(pcm), FRAME)
                for e in await detector.push(pcm[i : i + FRAME])
            ]

        events = run_virtual(push_all())
        detector.close()
        heard[gate] = ([(e.kind, e.at_ms) for e in events], detector.scored)
    (ungated, all_windows), (gated, scored) = heard[None], heard[QUIET_DBFS]
    assert (
        [kind for kind, _ in gated]
        == [kind for kind, _ in ungated]
        == [
            SpeechEventKind.START,
            SpeechEventKind.END,
        ]
    )
    assert all(abs(a - b) <= 64 for (_, a), (_, b) in zip(gated, ungated, strict=True))
    assert all_windows - scored >= 25  # the 1.3 s of hiss around the speech: not scored
