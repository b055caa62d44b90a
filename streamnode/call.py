"""A whole simulated call and its report: what ``voice-agent call`` runs.

Streams a caller WAV through :class:`streamnode.client.StreamNodeClient`, finds where the
caller stopped speaking, and measures the greeting latency and each reply's latency.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audio.wav import pcm_to_wav, read_wav_file
from config.settings import SUPPORTED_SAMPLE_RATES
from streamnode.client import (
    DEFAULT_SAMPLE_RATE,
    EVENT_KINDS,
    ReceivedEvent,
    SimulatorError,
    StreamNodeClient,
    default_metadata,
)
from streamnode.lookup import fetch_health, fetch_heard, hung_up_early, unavailable_hint

# --- analysis ----------------------------------------------------------------------


def detect_speech_segments(
    pcm: bytes,
    sample_rate: int,
    *,
    window_ms: int = 20,
    threshold_dbfs: float = -40.0,
    min_silence_ms: int = 300,
    min_speech_ms: int = 60,
) -> list[tuple[float, float]]:
    """(start, end) seconds of speech in 16-bit mono PCM, by RMS energy per window.

    A window is speech when its RMS exceeds ``threshold_dbfs``; a segment ends once
    ``min_silence_ms`` of silence follows it (shorter pauses are merged), and segments
    shorter than ``min_speech_ms`` (clicks) are dropped.
    """
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    window = max(1, sample_rate * window_ms // 1000)
    if samples.size == 0:
        return []
    starts = np.arange(0, samples.size, window)
    energy = np.add.reduceat(samples.astype(np.float64) ** 2, starts)
    lengths = np.diff(np.append(starts, samples.size))
    rms = np.sqrt(energy / lengths)
    speech = rms > 32768.0 * 10 ** (threshold_dbfs / 20)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], speech, [False])).astype(np.int8)))
    runs: list[list[int]] = []  # [first_window, end_window) of each speech run
    gap_windows = math.ceil(min_silence_ms / window_ms)
    for first, end in edges.reshape(-1, 2).tolist():
        if runs and first - runs[-1][1] < gap_windows:
            runs[-1][1] = end
        else:
            runs.append([first, end])
    segments = [
        (first * window / sample_rate, min(end * window, samples.size) / sample_rate)
        for first, end in runs
    ]
    return [(a, b) for a, b in segments if (b - a) * 1000 >= min_speech_ms]


def reply_latencies(
    events: Sequence[ReceivedEvent],
    speech_ends: Sequence[float | None],
    *,
    continuation_gap_s: float = 0.25,
) -> list[float | None]:
    """For each speech end (monotonic), ms until the bot's reply started arriving.

    The reply is the first playAudio after the end that starts a new burst: a playAudio
    arriving within ``continuation_gap_s`` of the previous one, with no killAudio
    between, continues that burst (e.g. a greeting still streaming when the caller
    stopped talking) and is not a reply. ``0`` makes every playAudio count. None where
    no reply came, or the end was never sent.
    """
    burst_starts: list[float] = []
    last_play: float | None = None
    for event in events:
        if event.kind == "killAudio":
            last_play = None
        elif event.kind == "playAudio":
            if last_play is None or event.t - last_play >= continuation_gap_s:
                burst_starts.append(event.t)
            last_play = event.t
    latencies: list[float | None] = []
    for end in speech_ends:
        i = len(burst_starts) if end is None else bisect.bisect_right(burst_starts, end)
        latencies.append(
            None if end is None or i == len(burst_starts) else (burst_starts[i] - end) * 1000
        )
    return latencies


def frame_sent_at(offset_s: float, send_times: Sequence[float], frame_ms: int) -> float | None:
    """When the frame holding the audio just before ``offset_s`` was sent, if it was."""
    index = max(0, math.ceil(offset_s * 1000 / frame_ms - 1e-9) - 1)
    return send_times[index] if index < len(send_times) else None


@dataclass(slots=True)
class CallReport:
    url: str
    call_id: str | None
    sample_rate: int
    speech_segments: list[tuple[float, float]]  # seconds into the streamed WAV
    greeting_latency_ms: float | None  # metadata sent -> first playAudio
    reply_latencies_ms: list[float | None]  # one per speech segment; None = no reply
    counts: dict[str, int]
    problems: list[str]
    bot_audio_ms: float  # total duration of the playAudio received
    transfer_destination: str | None
    close_code: int | None
    closed_by_server: bool
    saved_audio: Path | None = None
    max_send_lag_ms: float = 0.0  # > a few ms means the simulator itself was overloaded
    events: list[ReceivedEvent] = field(default_factory=list, repr=False)
    heard: list[str] | None = None  # the caller's words as the server heard them, if it says
    hint: str | None = None  # why the server hung up without answering, if it did

    @property
    def ok(self) -> bool:
        """The call went fine: the bot spoke and nothing it sent was wrong."""
        return self.counts.get("playAudio", 0) > 0 and not self.problems


# --- a whole call ------------------------------------------------------------------


def load_caller_audio(wav: Path | None, sample_rate: int | None) -> tuple[bytes, int]:
    """The caller's PCM and the node's rate; the WAV must already be at that rate."""
    if wav is None:
        rate = sample_rate or DEFAULT_SAMPLE_RATE
        pcm = b""
    else:
        try:
            info = read_wav_file(wav)
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"cannot read {wav}: {exc}") from exc
        if info.channels != 1 or info.sample_width != 2:
            raise SimulatorError(
                f"{wav} is {info.channels}-channel {info.sample_width * 8}-bit; "
                "the node streams mono 16-bit PCM"
            )
        if sample_rate is not None and sample_rate != info.sample_rate:
            raise SimulatorError(
                f"{wav} is {info.sample_rate} Hz but the node is set to {sample_rate} Hz; "
                "resample the file first (e.g. sox in.wav -r 16000 out.wav)"
            )
        rate, pcm = info.sample_rate, info.pcm
    if rate not in SUPPORTED_SAMPLE_RATES:
        raise SimulatorError(f"the node supports {SUPPORTED_SAMPLE_RATES} Hz, not {rate}")
    return pcm, rate


async def run_call(
    url: str,
    *,
    wav: Path | None = None,
    metadata: Mapping[str, Any] | str | None = None,
    sample_rate: int | None = None,
    seconds_of_silence_after: float = 3.0,
    save_audio: Path | None = None,
    on_event: Callable[[ReceivedEvent], None] | None = None,
    realtime: bool = True,
    extra_headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    frame_ms: int = 20,
    open_timeout: float = 10,
    keep_audio: bool = True,
    continuation_gap_s: float = 0.25,
    close_grace_s: float = 1.0,
) -> CallReport:
    """One call as the node makes it: metadata, the WAV, trailing silence, close.

    The call stops early when the server transfers, disconnects or closes. With
    ``realtime=False`` audio goes out as fast as possible and the run then waits up to
    ``seconds_of_silence_after`` for the server to end the call.
    """
    pcm, rate = await asyncio.to_thread(load_caller_audio, wav, sample_rate)
    segments = detect_speech_segments(pcm, rate)
    meta = default_metadata() if metadata is None else metadata
    node = StreamNodeClient(
        sample_rate=rate, on_event=on_event, keep_audio=keep_audio or save_audio is not None
    )
    async with node:
        await node.connect(url, extra_headers=extra_headers, open_timeout=open_timeout)
        await node.send_metadata(meta)
        sent = await node.stream_pcm(pcm, rate, frame_ms, realtime)
        await node.stream_silence(seconds_of_silence_after, rate, realtime, frame_ms)
        if realtime:
            await _listen_to_the_end(node, rate, frame_ms)
        else:
            await node.wait_finished(seconds_of_silence_after)
        if node.counts["disconnect"]:
            # The server may hang up right after disconnect: let it, so the report says who.
            await node.wait_closed(close_grace_s)
    if save_audio is not None:
        await asyncio.to_thread(save_audio.write_bytes, pcm_to_wav(node.bot_audio, rate))
    # Time-compressed runs have no meaningful gaps, so every playAudio may be a reply.
    gap = continuation_gap_s if realtime else 0.0
    ends = [frame_sent_at(end, sent, frame_ms) for _, end in segments]
    report = _report(
        node,
        url,
        meta,
        segments,
        reply_latencies(node.events, ends, continuation_gap_s=gap),
        save_audio,
    )
    await _ask_the_server(report)
    return report


LISTEN_LIMIT_S = 30.0  # longest the caller stays on after the WAV while the bot still talks


async def _listen_to_the_end(
    node: StreamNodeClient, rate: int, frame_ms: int, limit_s: float = LISTEN_LIMIT_S
) -> None:
    """Stay on the line (sending silence, as the node does) while the bot is still talking,
    so a reply or an apology is heard out and a hang-up after it is seen."""
    waited = 0.0
    while node.is_playing and not node.finished and waited < limit_s:
        await node.stream_silence(0.5, rate, True, frame_ms)
        waited += 0.5
    if node.counts["playAudio"] and not node.finished:
        await node.stream_silence(0.5, rate, True, frame_ms)  # a disconnect follows playback


async def _ask_the_server(report: CallReport) -> None:
    """What the server heard (its call history), and why it hung up early (its /health)."""
    if report.call_id is not None:
        report.heard = await fetch_heard(report.url, report.call_id)
    if hung_up_early(report.counts, report.reply_latencies_ms, report.heard):
        report.hint = unavailable_hint(await fetch_health(report.url))


def _report(
    node: StreamNodeClient,
    url: str,
    metadata: Mapping[str, Any] | str,
    segments: list[tuple[float, float]],
    replies: list[float | None],
    saved: Path | None,
) -> CallReport:
    first_play = next((e.t for e in node.events if e.kind == "playAudio"), None)
    greeting = (
        None
        if first_play is None or node.metadata_sent_at is None
        else (first_play - node.metadata_sent_at) * 1000
    )
    call_id = None if isinstance(metadata, str) else metadata.get("callid")
    return CallReport(
        url=url,
        call_id=call_id if isinstance(call_id, str) else None,
        sample_rate=node.sample_rate,
        speech_segments=segments,
        greeting_latency_ms=greeting,
        reply_latencies_ms=replies,
        counts={kind: node.counts.get(kind, 0) for kind in EVENT_KINDS},
        problems=list(node.problems),
        bot_audio_ms=node.received_audio_ms,
        transfer_destination=node.transfer_destination,
        close_code=node.close_code,
        closed_by_server=node.closed_by_server,
        saved_audio=saved,
        max_send_lag_ms=node.max_send_lag_ms,
        events=list(node.events),
    )
