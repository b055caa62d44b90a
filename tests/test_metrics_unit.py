"""Metrics from call events (pure), and the shared directory for several workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.call.providers import Providers
from pipeline.events import BargeIn, CallEnded, CallStarted, ProviderIssue, TurnTimings
from pipeline.providers.base import ContextTextToSpeech, SpeechContext
from pipeline.providers.warm import Warmable
from server.cli import _share_metrics
from server.metered import Metering, metered
from server.metrics import CallMetrics, label


def values(metrics: CallMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_events_become_counters_gauges_and_latency_histograms() -> None:
    metrics = CallMetrics()
    metrics.listener(CallStarted(call_id="a", sample_rate=8000, language="en"))
    metrics.listener(CallStarted(call_id="b", sample_rate=8000, language="en"))
    metrics.listener(
        TurnTimings(
            call_id="a",
            turn=1,
            user_text="hi",
            stt_final_ms=1000,
            llm_first_token_ms=1250,
            tts_first_audio_ms=1400,
            first_audio_sent_ms=1420,
        )
    )
    metrics.listener(TurnTimings(call_id="a", turn=2, user_text="x", outcome="unheard"))
    metrics.listener(BargeIn(call_id="a", turn=1, heard_text="", words="stop"))
    metrics.listener(
        ProviderIssue(
            call_id="a", provider="Open AI!", message="m", retried=True, category="rate_limited"
        )
    )
    metrics.listener(
        CallEnded(call_id="a", reason="transfer", detail="", duration_s=9, turns=2, barge_ins=1)
    )
    got = values(metrics)
    assert got[("voice_active_calls", ())] == 1
    assert got[("voice_calls_started_total", ())] == 2
    assert got[("voice_calls_ended_total", (("reason", "transfer"),))] == 1
    assert got[("voice_turns_total", (("outcome", "answered"),))] == 1
    assert got[("voice_turns_total", (("outcome", "unheard"),))] == 1
    assert got[("voice_barge_ins_total", ())] == 1
    errors = ("voice_provider_errors_total", (("kind", "rate_limited"), ("provider", "open_ai_")))
    assert got[errors] == 1
    assert got[("voice_provider_retries_total", (("provider", "open_ai_"),))] == 1
    assert got[("voice_reply_latency_seconds_count", ())] == 1  # the unheard turn has no audio
    assert got[("voice_reply_latency_seconds_sum", ())] == pytest.approx(0.42)
    assert got[("voice_reply_latency_seconds_bucket", (("le", "0.4"),))] == 0
    assert got[("voice_reply_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("voice_stt_final_to_llm_first_token_seconds_sum", ())] == pytest.approx(0.25)
    assert got[("voice_llm_first_token_to_tts_first_audio_seconds_sum", ())] == pytest.approx(0.15)


def test_label_values_stay_short_and_plain() -> None:
    assert label("Deepgram") == "deepgram"
    assert label("x" * 100) == "x" * 32
    assert label("") == "unknown"


def test_several_workers_share_a_fresh_metrics_directory(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    _share_metrics(1, environ)
    assert environ == {}
    _share_metrics(2, environ)
    created = Path(environ["PROMETHEUS_MULTIPROC_DIR"])
    assert created.is_dir()
    created.rmdir()
    (tmp_path / "counter_123.db").write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not ours")
    _share_metrics(3, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


class _PlainTTS:
    name = "plain"

    def cache_key(self, text: str, sample_rate: int) -> tuple[str, ...]:
        return (text, str(sample_rate))

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        yield b"\x00\x00"

    async def aclose(self) -> None:
        return None

    async def warm_connections(self, connections: int) -> int:
        return connections


class _ContextTTS(_PlainTTS):
    name = "ctx"

    def context(self, sample_rate: int) -> AbstractAsyncContextManager[SpeechContext]:
        raise AssertionError("not opened in this test")


async def test_counting_wrappers_keep_every_capability_of_the_provider() -> None:
    counted: list[tuple[str, str]] = []

    def count(provider: str, stage: str) -> None:
        counted.append((provider, stage))

    plain = metered(Providers(stt=None, llm=None, tts=_PlainTTS()), count).tts
    assert plain is not None
    warmable: object = plain
    assert (
        isinstance(warmable, Warmable) and await warmable.warm_connections(2) == 2
    )  # handed through
    capable: object = plain
    assert not isinstance(capable, ContextTextToSpeech)  # no capability it lacks
    assert [chunk async for chunk in plain.synthesize("hi", 8000)] == [b"\x00\x00"]
    assert plain.cache_key("hi", 8000) == ("hi", "8000") and plain.name == "plain"
    rich = metered(Providers(stt=None, llm=None, tts=_ContextTTS()), count).tts
    assert isinstance(rich, ContextTextToSpeech)
    with pytest.raises(AssertionError, match="not opened"):
        rich.context(8000)
    assert counted == [("plain", "tts"), ("ctx", "tts")]


def test_a_provider_shared_by_two_call_languages_gets_one_wrapper() -> None:
    shared, own = _PlainTTS(), _PlainTTS()
    metering = Metering(lambda provider, stage: None)
    english = metering.providers(Providers(stt=None, llm=None, tts=shared))
    hindi = metering.providers(Providers(stt=None, llm=None, tts=shared))
    other = metering.providers(Providers(stt=None, llm=None, tts=own))
    assert english.tts is hindi.tts and english.tts is not other.tts
