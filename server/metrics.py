"""``GET /metrics``: Prometheus metrics, built from the call event feed.

Every figure comes from the vendor-free call events (:mod:`pipeline.events`) except
provider requests (counted by :mod:`server.metered` around each provider), event-loop
lag (the app's watcher), the records writer's counts, and process CPU/RSS. Labels stay
low-cardinality: end reason, turn outcome, provider name, stage and error kind; never a
call id or a number.

Several worker processes on one port: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty
directory, wiped when the whole service starts) in the environment before the server
starts; each process writes its values there and any of them answers ``/metrics`` with
the sum (gauges: the sum over live processes).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from pipeline.events import (
    AgentSpeech,
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    ProviderIssue,
    TurnTimings,
)

__all__ = ["CONTENT_TYPE_LATEST", "CallMetrics", "multiprocess_dir"]

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LABEL = re.compile(r"[^a-z0-9_]+")


def multiprocess_dir() -> str | None:
    """The shared directory of multi-process mode, if the environment names one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def label(value: str) -> str:
    """A provider name as a label value: lower-case word characters, at most 32."""
    return _LABEL.sub("_", value.lower())[:32] or "unknown"


class CallMetrics:
    """The server's metrics in their own registry (one app, one set of series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry
        self.active_calls = Gauge(
            "voice_active_calls", "Calls in progress", registry=r, multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            "voice_ready",
            "1 while the process takes new calls (/ready answers 200)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.calls_started = Counter("voice_calls_started", "Calls started", registry=r)
        self.calls_ended = Counter(
            "voice_calls_ended", "Calls ended, by end reason", ["reason"], registry=r
        )
        self.turns = Counter("voice_turns", "Caller turns, by outcome", ["outcome"], registry=r)
        self.barge_ins = Counter("voice_barge_ins", "Replies cut off by the caller", registry=r)
        self.provider_requests = Counter(
            "voice_provider_requests",
            "Requests to providers (STT streams, LLM completions, TTS syntheses)",
            ["provider", "stage"],
            registry=r,
        )
        self.provider_errors = Counter(
            "voice_provider_errors",
            "Provider faults seen by calls, by kind (timeout, rate_limited, ...)",
            ["provider", "kind"],
            registry=r,
        )
        self.provider_retries = Counter(
            "voice_provider_retries",
            "Provider faults retried (or streams re-established) within a call",
            ["provider"],
            registry=r,
        )
        self.greeting_latency = _histogram(
            "voice_greeting_latency_seconds", "Call start to the greeting's first audio out", r
        )
        self.reply_latency = _histogram(
            "voice_reply_latency_seconds",
            "End of the caller's speech (final transcript) to the reply's first audio out",
            r,
        )
        self.stt_to_llm = _histogram(
            "voice_stt_final_to_llm_first_token_seconds",
            "Final transcript to the LLM's first token",
            r,
        )
        self.llm_to_tts = _histogram(
            "voice_llm_first_token_to_tts_first_audio_seconds",
            "LLM first token to the TTS's first audio",
            r,
        )
        self.loop_lag = Histogram(
            "voice_event_loop_lag_seconds",
            "How late the event loop wakes a 100 ms timer",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.records_written = Counter(
            "voice_records_written", "Call record writes that reached the database", registry=r
        )
        self.records_dropped = Counter(
            "voice_records_dropped",
            "Call records lost (queue full, or database down at shutdown)",
            registry=r,
        )
        self.cpu_seconds = Gauge(
            "voice_process_cpu_seconds",
            "CPU time used by the server process(es), user + system",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rss_bytes = Gauge(
            "voice_process_resident_memory_bytes",
            "Resident memory of the server process(es)",
            registry=r,
            multiprocess_mode="livesum",
        )

    # -- inputs ---------------------------------------------------------------------------

    def listener(self, event: CallEvent) -> None:
        """A :class:`~pipeline.events.CallEventHub` listener: counter work only."""
        if isinstance(event, CallStarted):
            self.calls_started.inc()
            self.active_calls.inc()
        elif isinstance(event, CallEnded):
            self.calls_ended.labels(event.reason).inc()
            self.active_calls.dec()
        elif isinstance(event, TurnTimings):
            self._turn(event)
        elif isinstance(event, BargeIn):
            self.barge_ins.inc()
        elif isinstance(event, ProviderIssue):
            provider = label(event.provider)
            self.provider_errors.labels(provider, label(event.category)).inc()
            if event.retried:
                self.provider_retries.labels(provider).inc()
        elif isinstance(event, AgentSpeech) and event.greeting and event.first_audio_ms is not None:
            self.greeting_latency.observe(event.first_audio_ms / 1000)

    def _turn(self, event: TurnTimings) -> None:
        self.turns.labels(event.outcome).inc()
        end_of_speech = (
            event.end_of_speech_ms if event.end_of_speech_ms is not None else event.stt_final_ms
        )
        _observe_gap(self.reply_latency, end_of_speech, event.first_audio_sent_ms)
        _observe_gap(self.stt_to_llm, event.stt_final_ms, event.llm_first_token_ms)
        _observe_gap(self.llm_to_tts, event.llm_first_token_ms, event.tts_first_audio_ms)

    def provider_request(self, provider: str, stage: str) -> None:
        self.provider_requests.labels(label(provider), stage).inc()

    def observe_loop_lag(self, lag_ms: float) -> None:
        self.loop_lag.observe(max(0.0, lag_ms) / 1000)

    def sample_process(self, *, ready: bool) -> None:
        """Readiness, CPU and RSS of this process (periodically, and at each scrape)."""
        self.ready.set(1 if ready else 0)
        self.cpu_seconds.set(time.process_time())
        rss = _rss_bytes()
        if rss is not None:
            self.rss_bytes.set(rss)

    # -- output ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition text: this process's series, or all processes' in multi-process mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def forget_dead_processes(self) -> None:
        """Multi-process mode: drop live gauges of processes gone without cleaning up
        (killed, crashed), so active calls and readiness only count the living."""
        directory = self.multiprocess_dir
        if directory is None:
            return
        for path in Path(directory).glob("gauge_live*_*.db"):
            pid_text = path.stem.rsplit("_", 1)[-1]
            if pid_text.isdigit() and not _alive(int(pid_text)):
                multiprocess.mark_process_dead(int(pid_text), directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """This process is going away: its live gauges leave the sums."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def _histogram(name: str, documentation: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(name, documentation, buckets=LATENCY_BUCKETS, registry=registry)


def _observe_gap(histogram: Histogram, start_ms: float | None, end_ms: float | None) -> None:
    if start_ms is not None and end_ms is not None and end_ms >= start_ms:
        histogram.observe((end_ms - start_ms) / 1000)


def _rss_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
