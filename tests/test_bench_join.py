"""The benchmark's scripted-time terms agree with what the fakes actually do."""

from __future__ import annotations

import pytest

from bench.join import llm_sentence_one_ms, tts_fill_ms
from bench.procs import Latencies
from testkit.cartesia_script import SpeechParams, SpeechSettings, plan_speech


@pytest.mark.parametrize("realtime_factor", [4.0, 2.0, 0.0])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_fill_is_when_the_fake_has_sent_one_whole_chunk(realtime_factor: float, rate: int) -> None:
    lat = Latencies(tts_realtime_factor=realtime_factor)
    settings = SpeechSettings(
        first_audio_ms=lat.tts_first_audio_ms, realtime_factor=realtime_factor
    )
    params = SpeechParams("sonic-3", "You said: hello there.", "v", rate, None, "en")
    audio_ms = 0.0
    for chunk in plan_speech(params, settings):
        audio_ms += len(chunk.pcm) / 2 / rate * 1000
        if audio_ms >= 100:
            break
    fill_ms = chunk.at_s * 1000 - lat.tts_first_audio_ms
    assert tts_fill_ms(lat) == pytest.approx(fill_ms, abs=0.01)


def test_sentence_one_closes_on_its_own_token() -> None:
    # "You said: hello there." is certain on " there." (token 3), without waiting for
    # " Is" (token 4, as before issue 13): 200 + 3 x 30 ms.
    assert llm_sentence_one_ms("hello there", Latencies()) == pytest.approx(290.0)
