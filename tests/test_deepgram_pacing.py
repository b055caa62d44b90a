"""How caller audio is paced to Deepgram: 40 ms messages while the caller speaks and until
Deepgram can have ended the utterance, the stall watch's 100-200 ms flushes in the long
quiet after, and the first loud frame after that at once. The decision is a small class
tested on its own; the loopback test runs the real SDK against the fake and checks that
the quiet costs fewer messages and that not a byte is lost or reordered.
"""

from __future__ import annotations

import asyncio

import numpy as np
from pydantic import SecretStr

from config.settings import DeepgramSettings
from pipeline.providers.deepgram_stt import DeepgramSTT, SendPacing, is_speech
from testkit import FakeDeepgram

RATE = 16000
FRAME = RATE * 2 // 50  # 20 ms
BATCH = FRAME * 2  # 40 ms
LOUD = (np.sin(np.arange(FRAME // 2) / 3) * 8000).astype("<i2").tobytes()
QUIET = bytes(FRAME)


def test_speech_goes_in_batches_until_long_quiet_then_waits_for_the_flush() -> None:
    assert is_speech(LOUD) and not is_speech(QUIET)
    pacing = SendPacing(BATCH, long_quiet_bytes=FRAME * 5)  # 100 ms of quiet is "long"
    assert pacing.long_quiet()  # a call starts quiet: the greeting is playing
    assert not pacing.send_now(QUIET, FRAME)
    assert not pacing.send_now(QUIET, 2 * FRAME)  # a full batch of quiet: still waits
    assert pacing.send_now(LOUD, FRAME)  # the caller speaks: at once, however little
    assert not pacing.long_quiet()
    assert not pacing.send_now(LOUD, FRAME)  # then 40 ms batches
    assert pacing.send_now(LOUD, BATCH)
    for _ in range(2):  # 80 ms of quiet after speech: Deepgram needs it to end the turn
        assert pacing.send_now(QUIET, BATCH)
        assert not pacing.send_now(QUIET, FRAME)
    assert not pacing.send_now(QUIET, BATCH)  # the fifth quiet frame: long quiet
    assert pacing.long_quiet()
    assert not pacing.send_now(QUIET, 10 * FRAME)
    assert pacing.send_now(LOUD, 11 * FRAME)


async def test_long_quiet_goes_in_fewer_messages_and_nothing_is_lost() -> None:
    settings = DeepgramSettings(api_key=SecretStr("dg-" + "k" * 37), utterance_end_ms=1000)
    async with FakeDeepgram(keep_audio=True) as fake:
        settings = settings.model_copy(update={"base_url": fake.url})
        provider = DeepgramSTT(settings)
        sent = bytearray()

        async def speak(frame: bytes, seconds: float) -> int:
            """Stream ``frame`` in real time; how many messages the fake got meanwhile."""
            record = fake.connections[-1] if fake.connections else None
            before = record.audio_frames if record else 0
            for _ in range(round(seconds * 50)):
                stream.send_audio(frame)
                sent.extend(frame)
                await asyncio.sleep(0.02)
            return fake.connections[-1].audio_frames - before

        async with provider.stream(RATE) as stream:
            await fake.wait_for_connections(1)
            await speak(LOUD, 0.4)
            after_speech = await speak(QUIET, 1.5)  # utterance_end_ms + 500 ms: 40 ms pace
            long_quiet = await speak(QUIET, 2.0)
            await speak(LOUD, 0.2)
            await fake.wait_until(lambda: fake.connections[-1].audio_bytes == len(sent))
        record = fake.connections[-1]
        assert bytes(record.audio) == bytes(sent)  # every byte, in order, on one socket
        assert len(fake.connections) == 1 and not record.violations
        # 2 s at the 40 ms pace is 50 messages; the stall watch flushes once per >= 100 ms.
        assert long_quiet <= 2.0 / 0.1 + 2, long_quiet
        assert after_speech > long_quiet, (after_speech, long_quiet)
