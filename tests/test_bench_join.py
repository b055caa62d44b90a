"""The benchmark's scripted-time terms agree with what the fakes actually do."""

from __future__ import annotations

import pytest

from bench.join import figures, llm_sentence_one_ms, tts_fill_ms
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


def test_overhead_from_the_callers_speech_end_needs_no_stt_match() -> None:
    lat = Latencies()
    scripted_s = (200 + 3 * 30 + 150) / 1000  # sentence one on token 3, then TTS
    call = {
        "greeting_first_play": 1.2,
        "metadata_sent_at": 1.0,
        "turns": [{"speech_end": 10.0, "first_play": 10.0 + 0.3 + 0.005 + scripted_s + 0.02}],
        "barge_ins": [],
    }
    stt = {
        "opened_at": 1.01,
        "events": [
            [10.305, "sent", {"type": "Results", "transcript": "hello there", "is_final": True}],
            [10.305, "sent", {"type": "Results", "transcript": "", "speech_final": True}],
        ],
    }
    matched = figures([call], [stt], lat)
    assert matched["turn_overhead_ms"] == [pytest.approx(20.0)]  # from the fake's final
    assert matched["turn_overhead_from_speech_end_ms"] == [pytest.approx(25.0)]  # + forwarding
    alone = figures([call], [], lat)
    assert alone["turn_overhead_ms"] == []
    assert alone["turn_overhead_from_speech_end_ms"] == [pytest.approx(25.0)]
