"""Just-in-time playout on virtual time, and the jittered-line underrun harness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.turntaking.pacer import JitPacer
from testkit.jitter_line import Pause, play_reply, tts_ready_times

CHUNK = 0.1


def test_a_reply_starts_with_a_burst_of_one_lead_then_one_chunk_per_chunk_time() -> None:
    pacer = JitPacer(0.4)
    sends = []
    now = 10.0
    for _ in range(8):
        at = pacer.send_at(now, CHUNK)
        assert at is not None
        now = at
        sends.append(round(now - 10.0, 6))
        pacer.sent(now, CHUNK)
    assert sends == [0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4]
    assert pacer.ahead(now) == pytest.approx(0.4)


def test_never_more_than_the_lead_queued_after_a_send() -> None:
    pacer = JitPacer(0.35)
    now = 0.0
    for _ in range(50):
        at = pacer.send_at(now, CHUNK)
        assert at is not None and at >= now
        now = at
        pacer.sent(now, CHUNK)
        assert pacer.ahead(now) <= 0.35 + 1e-9
        now += 0.013  # the sender wakes a little late


def test_sent_reports_the_play_interval_back_to_back_or_on_arrival() -> None:
    pacer = JitPacer(0.4)
    assert pacer.sent(1.0, CHUNK) == pytest.approx((1.0, 1.1))
    assert pacer.sent(1.05, CHUNK) == pytest.approx((1.1, 1.2))
    assert pacer.sent(2.0, CHUNK) == pytest.approx((2.0, 2.1))  # the line had run dry
    assert pacer.playing(2.05)
    assert not pacer.playing(2.1)


def test_pause_holds_everything_and_resume_carries_on() -> None:
    pacer = JitPacer(0.4)
    pacer.sent(0.0, CHUNK)
    pacer.pause()
    assert pacer.send_at(0.0, CHUNK) is None
    assert pacer.send_at(5.0, CHUNK) is None
    pacer.resume()
    assert pacer.send_at(0.05, CHUNK) == 0.05
    assert pacer.send_at(5.0, CHUNK) == 5.0


def test_clear_drops_the_queued_audio() -> None:
    pacer = JitPacer(0.4)
    for _ in range(4):
        pacer.sent(0.0, CHUNK)
    pacer.pause()
    pacer.clear(0.15)
    assert pacer.playing_until == pytest.approx(0.15)
    assert not pacer.paused
    assert pacer.send_at(0.15, CHUNK) == 0.15


def test_a_chunk_longer_than_the_lead_goes_when_the_line_runs_dry() -> None:
    pacer = JitPacer(0.2)
    pacer.sent(0.0, 0.5)
    assert pacer.send_at(0.1, 0.5) == pytest.approx(0.5)


def test_lead_validation() -> None:
    for bad in (0.0, -1.0, 11.0):
        with pytest.raises(ValueError, match="lead_s"):
            JitPacer(bad)
    with pytest.raises(ValueError, match="start_s"):
        JitPacer(0.3, start_s=0.5)


def test_min_frame_is_the_start_only_on_a_dry_line() -> None:
    pacer = JitPacer(0.4, start_s=0.2)
    assert pacer.min_frame_s(0.0) == 0.2
    pacer.sent(0.0, 0.2)
    assert pacer.min_frame_s(0.1) == 0.0
    assert pacer.min_frame_s(0.2) == 0.2


# --- the jittered line ------------------------------------------------------------------------

# A three-sentence reply: 2.4 s + 1.1 s + 3.0 s of audio, Cartesia-like generation.
READY = tts_ready_times([2.4, 1.1, 3.0], chunk_s=CHUNK, first_audio_s=0.15, realtime_factor=4.0)


@pytest.mark.parametrize("lead_s", [0.3, 0.4, 0.5])
@pytest.mark.parametrize("seed", range(20))
def test_paced_reply_never_runs_dry_on_a_line_with_0_to_150_ms_jitter(
    lead_s: float, seed: int
) -> None:
    report = play_reply(
        READY, chunk_s=CHUNK, pacer=JitPacer(lead_s, start_s=0.2), max_jitter_s=0.15, seed=seed
    )
    assert report.underruns == 0, report.gaps_s
    assert report.audio_s == pytest.approx(len(READY) * CHUNK)
    # Little ever waits at the node: the lead, plus what the jitter bunched up.
    assert report.max_queued_s <= lead_s + 0.15 + 1e-9


def test_the_harness_catches_underruns_when_the_lead_is_too_short() -> None:
    underruns = sum(
        play_reply(
            READY, chunk_s=CHUNK, pacer=JitPacer(0.1, 0.1), max_jitter_s=0.15, seed=seed
        ).underruns
        for seed in range(20)
    )
    assert underruns > 20


def test_without_pacing_seconds_of_audio_pile_up_at_the_node() -> None:
    report = play_reply(READY, chunk_s=CHUNK, pacer=None, max_jitter_s=0.15, seed=1)
    assert report.max_queued_s > 3.0  # what a barge-in would have to kill


def test_starting_a_dry_line_with_one_chunk_stutters_under_jitter() -> None:
    """Why start_s exists: the second chunk can be later than the first is long."""
    underruns = [
        play_reply(
            READY, chunk_s=CHUNK, pacer=JitPacer(0.4), max_jitter_s=0.15, seed=seed
        ).underruns
        for seed in range(20)
    ]
    assert sum(underruns) > 0


def test_pause_stops_the_caller_within_the_lead_and_resume_loses_nothing() -> None:
    pauses = [Pause(at=1.0, until=1.3)]  # a backchannel decided in 300 ms
    report = play_reply(
        READY,
        chunk_s=CHUNK,
        pacer=JitPacer(0.4, 0.2),
        max_jitter_s=0.15,
        seed=3,
        pauses=pauses,
    )
    assert report.underruns == 0
    assert report.audio_s == pytest.approx(len(READY) * CHUNK)  # nothing lost
    assert not any(1.0 <= t < 1.3 for t in report.sent_at)
    # At the pause, only what was already sent remains to be heard: at most the lead.
    assert report.queued_at(1.0 + 0.15) <= 0.4 + 1e-9


def test_tts_ready_times_follow_the_sentences() -> None:
    ready = tts_ready_times([0.2, 0.2], chunk_s=0.1, first_audio_s=0.1, realtime_factor=2.0)
    assert ready == pytest.approx([0.15, 0.2, 0.35, 0.4])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    # A sentence must outlast the next one's TTS wait plus the jitter: shorter ones
    # ("Sure.") leave a gap that no pacing can fill (the TTS is behind, not the line).
    sentences=st.lists(st.floats(0.8, 4.0), min_size=1, max_size=5),
    first_audio_s=st.floats(0.05, 0.25),
)
def test_no_underrun_for_any_reply_while_tts_keeps_ahead(
    seed: int, sentences: list[float], first_audio_s: float
) -> None:
    ready = tts_ready_times(
        sentences, chunk_s=CHUNK, first_audio_s=first_audio_s, realtime_factor=4.0
    )
    pacer = JitPacer(0.4, start_s=0.2)
    report = play_reply(ready, chunk_s=CHUNK, pacer=pacer, max_jitter_s=0.15, seed=seed)
    assert report.underruns == 0, report.gaps_s
