"""The Stream Node simulator and the ``voice-agent`` CLI, against a scripted fake agent."""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import io
import json
import socket
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from config import get_settings
from server import cli
from streamnode import client as simulator
from streamnode.call import (
    detect_speech_segments,
    frame_sent_at,
    load_caller_audio,
    reply_latencies,
    run_call,
)
from streamnode.client import (
    CallEnded,
    ReceivedEvent,
    SimulatorError,
    StreamNodeClient,
    format_metadata,
)
from wire.knowlarity import disconnect, kill_audio, parse_metadata, play_audio_wav, transfer

RATE = 16000
DESTINATION = "+911234567890"


# --- audio helpers -----------------------------------------------------------------


def flat(segments: list[tuple[float, float]]) -> list[float]:
    return [x for pair in segments for x in pair]


def tone(seconds: float, rate: int = RATE, amplitude: float = 8000.0) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(round(seconds * rate) * 2)


def wav_file(pcm: bytes, rate: int = RATE, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def play(pcm: bytes, rate: int = RATE, channels: int = 1) -> str:
    return play_audio_wav(wav_file(pcm, rate, channels))


# Two utterances: 0.2-0.6 s and 1.1-1.4 s (all boundaries on 20 ms windows).
CALLER = silence(0.2) + tone(0.4) + silence(0.5) + tone(0.3) + silence(0.2)
CHUNK = tone(0.1)  # one 100 ms bot chunk
CHUNK_BYTES = len(CHUNK)


# --- a scripted stand-in for our server --------------------------------------------


@dataclass
class FakeAgent:
    """Greets with two chunks, answers utterance 1 with a chunk, and utterance 2 with
    killAudio, a chunk at ``reply_rate`` and then ``finish`` (transfer or disconnect)."""

    reply_rate: int = RATE
    finish: str = "transfer"
    metadata: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        try:
            await self._converse(ws)
        except Exception as exc:  # surfaced by the tests, not lost in a log
            self.errors.append(repr(exc))
            raise

    async def _converse(self, ws: ServerConnection) -> None:
        first = await ws.recv()
        assert isinstance(first, str)
        self.metadata.append(first)
        self.headers.append(dict(ws.request.headers) if ws.request else {})
        await ws.send(play(CHUNK))
        await ws.send(play(CHUNK))
        speaking, quiet, replies = False, 0, 0
        async for frame in ws:
            assert isinstance(frame, bytes)
            rms = float(np.sqrt(np.mean(np.frombuffer(frame, "<i2").astype(np.float64) ** 2)))
            if rms > 1000:
                speaking, quiet = True, 0
                continue
            quiet += 1
            if speaking and quiet == 15:  # 300 ms of silence ends an utterance
                speaking, replies = False, replies + 1
                if await self._reply(ws, replies):
                    return

    async def _reply(self, ws: ServerConnection, turn: int) -> bool:
        if turn == 1:
            await ws.send(play(CHUNK))
            return False
        await ws.send(kill_audio())
        await ws.send(play(tone(0.1, self.reply_rate), self.reply_rate))
        if self.finish == "disconnect":
            await ws.send(disconnect())
            await ws.close()
            return True
        await ws.send(transfer(DESTINATION))
        return False


@contextlib.contextmanager
def serve_in_thread(agent: FakeAgent) -> Iterator[str]:
    """The agent on 127.0.0.1 in its own loop, so sync CLI tests can call asyncio.run."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        # No receive backpressure: a handler that stops reading (to close) must still
        # see the client's close frame behind the audio frames still in flight.
        async with serve(agent.handler, "127.0.0.1", 0, max_queue=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            box["url"] = f"ws://127.0.0.1:{port}/voice"
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "fake agent did not start"
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def url(agent: FakeAgent) -> Iterator[str]:
    with serve_in_thread(agent) as address:
        yield address
    assert agent.errors == []


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wav"
    path.write_bytes(wav_file(CALLER))
    return path


def read_wav(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


# --- detect_speech_segments --------------------------------------------------------


def test_segments_of_the_caller_audio() -> None:
    assert flat(detect_speech_segments(CALLER, RATE)) == pytest.approx(
        flat([(0.2, 0.6), (1.1, 1.4)])
    )


def test_no_speech_in_empty_silence_or_quiet_noise() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 30, RATE).astype("<i2").tobytes()  # about -61 dBFS
    assert detect_speech_segments(b"", RATE) == []
    assert detect_speech_segments(silence(1.0), RATE) == []
    assert detect_speech_segments(noise, RATE) == []


def test_short_pauses_merge_and_long_ones_split() -> None:
    merged = tone(0.3) + silence(0.2) + tone(0.3)
    split = tone(0.3) + silence(0.3) + tone(0.3)
    assert flat(detect_speech_segments(merged, RATE)) == pytest.approx(flat([(0.0, 0.8)]))
    assert flat(detect_speech_segments(split, RATE)) == pytest.approx(
        flat([(0.0, 0.3), (0.6, 0.9)])
    )


def test_clicks_are_dropped_and_speech_at_the_end_counts() -> None:
    pcm = silence(0.5) + tone(0.02) + silence(0.5) + tone(0.25)
    assert flat(detect_speech_segments(pcm, RATE)) == pytest.approx(flat([(1.02, 1.27)]))


def test_segments_at_8k_with_a_partial_window_and_odd_byte() -> None:
    pcm = silence(0.1, 8000) + tone(0.205, 8000) + b"\x01"
    assert flat(detect_speech_segments(pcm, 8000)) == pytest.approx(flat([(0.1, 0.305)]))


def test_threshold_is_in_dbfs() -> None:
    quiet_speech = tone(0.5, amplitude=300.0)  # about -43 dBFS RMS
    assert detect_speech_segments(quiet_speech, RATE) == []
    assert flat(detect_speech_segments(quiet_speech, RATE, threshold_dbfs=-50)) == pytest.approx(
        flat([(0.0, 0.5)])
    )


# --- report logic ------------------------------------------------------------------


def ev(t: float, kind: str = "playAudio") -> ReceivedEvent:
    return ReceivedEvent(t, kind, 0)


def test_reply_is_the_first_play_audio_after_the_end() -> None:
    events = [ev(0.1), ev(2.5), ev(2.6), ev(5.0)]
    assert reply_latencies(events, [2.0, 4.0]) == pytest.approx([500.0, 1000.0])


def test_a_burst_still_streaming_at_the_end_is_not_the_reply() -> None:
    # The greeting streams in chunks 100 ms apart across the end of speech at 1.0 s.
    events = [ev(0.8), ev(0.9), ev(1.0), ev(1.1), ev(1.2), ev(1.9)]
    assert reply_latencies(events, [1.05]) == pytest.approx([850.0])
    assert reply_latencies(events, [1.05], continuation_gap_s=0) == pytest.approx([50.0])


def test_kill_audio_starts_a_new_burst() -> None:
    events = [ev(0.9), ev(1.0), ev(1.05, "killAudio"), ev(1.1)]
    assert reply_latencies(events, [1.02]) == pytest.approx([80.0])


def test_missing_replies_and_unsent_ends_are_none() -> None:
    events = [ev(1.0), ev(3.0, "transfer")]
    assert reply_latencies(events, [2.0, None]) == [None, None]


def test_frame_sent_at_maps_offsets_to_the_frame_holding_them() -> None:
    sends = [10.0, 10.02, 10.04, 10.06]
    assert frame_sent_at(0.0, sends, 20) == 10.0
    assert frame_sent_at(0.04, sends, 20) == 10.02  # the end of frame 1
    assert frame_sent_at(0.041, sends, 20) == 10.04
    assert frame_sent_at(0.1, sends, 20) is None  # never sent: the call ended first


def test_metadata_goes_in_the_documented_form() -> None:
    meta = {"callid": "abc", "virtual_number": "+91 1", "customer_number": "+91 2"}
    raw = format_metadata(meta)
    decoded = json.loads(raw)
    assert isinstance(decoded, str)
    assert decoded.startswith("{'callid': 'abc'")
    assert ast.literal_eval(decoded) == meta
    assert parse_metadata(raw).call_id == "abc"


def test_load_caller_audio_checks_the_rate(tmp_path: Path, caller_wav: Path) -> None:
    assert load_caller_audio(None, None) == (b"", RATE)
    assert load_caller_audio(None, 8000) == (b"", 8000)
    assert load_caller_audio(caller_wav, None) == (CALLER, RATE)
    with pytest.raises(SimulatorError, match="resample"):
        load_caller_audio(caller_wav, 8000)
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(wav_file(CALLER, channels=2))
    with pytest.raises(SimulatorError, match="mono"):
        load_caller_audio(stereo, None)
    odd = tmp_path / "odd.wav"
    odd.write_bytes(wav_file(silence(0.1, 22050), 22050))
    with pytest.raises(SimulatorError, match="22050"):
        load_caller_audio(odd, None)
    with pytest.raises(SimulatorError, match="cannot read"):
        load_caller_audio(tmp_path / "missing.wav", None)


# --- receiving, without a socket ---------------------------------------------------


def test_playback_clock_and_kill_boundaries() -> None:
    node = StreamNodeClient(sample_rate=RATE)
    first = node.handle_message(play(CHUNK), 10.0)
    second = node.handle_message(play(CHUNK), 10.01)
    assert (first.kind, first.duration_ms, first.play_start) == ("playAudio", 100.0, 10.0)
    assert first.wav is not None
    assert first.wav.sample_rate == RATE
    assert second.play_start == pytest.approx(10.1)  # queued behind the first
    assert node.playing_until == pytest.approx(10.2)
    node.handle_message(kill_audio(), 10.05)
    assert node.playing_until == 10.05
    third = node.handle_message(play(CHUNK), 10.06)
    assert third.play_start == 10.06
    assert node.kill_offsets == [2 * CHUNK_BYTES]
    assert node.bot_segments == [CHUNK * 2, CHUNK]
    assert node.received_audio_ms == pytest.approx(300.0)
    assert node.problems == []


@pytest.mark.parametrize(
    ("message", "kind", "problem"),
    [
        (play(CHUNK, rate=8000), "playAudio", "8000 Hz"),
        (play(tone(0.1) * 2, channels=2), "playAudio", "2 channels"),
        (play_audio_wav(b"hello, not a wav"), "playAudio", "not a PCM WAV"),
        (
            '{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"!!"}}',
            "unknown",
            "base64",
        ),
        ('{"type":"transfer","data":{}}', "unknown", "destination"),
        ('{"type":"dance"}', "unknown", "dance"),
        ("not json", "unknown", "not JSON"),
        (b"\x00\x01", "unknown", "binary"),
    ],
)
def test_invalid_frames_are_problems(message: str | bytes, kind: str, problem: str) -> None:
    node = StreamNodeClient(sample_rate=RATE)
    event = node.handle_message(message, 1.0)
    assert event.kind == kind
    assert len(node.problems) == 1
    assert problem in node.problems[0]
    assert node.bot_audio == b""  # invalid audio never reaches the recording


def test_transfer_and_disconnect_finish_the_call() -> None:
    node = StreamNodeClient()
    event = node.handle_message(transfer(DESTINATION), 1.0)
    assert (event.kind, event.destination) == ("transfer", DESTINATION)
    assert node.finished
    assert node.transfer_destination == DESTINATION
    other = StreamNodeClient()
    assert other.handle_message(disconnect(), 1.0).kind == "disconnect"
    assert other.finished
    assert not other.closed


def test_without_keep_audio_only_headers_and_durations_are_kept() -> None:
    node = StreamNodeClient(keep_audio=False)
    event = node.handle_message(play(CHUNK), 1.0)
    assert event.wav is not None
    assert event.wav.pcm == b""
    assert event.duration_ms == 100.0
    assert node.bot_audio == b""
    assert node.received_audio_ms == 100.0


def test_a_failing_callback_is_a_problem_not_a_crash() -> None:
    def boom(event: ReceivedEvent) -> None:
        raise RuntimeError("callback bug")

    node = StreamNodeClient(on_event=boom)
    node.handle_message(kill_audio(), 1.0)
    assert node.counts["killAudio"] == 1
    assert "callback bug" in node.problems[0]


# --- pacing, with a fake clock -----------------------------------------------------


class FakeConnection:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.frames.append(data)


def fake_clock(monkeypatch: pytest.MonkeyPatch, late_by: list[float]) -> None:
    """A clock every sleep overshoots: by late_by[0], late_by[1], ..., then 7 ms."""
    now = [100.0]

    async def sleep(delay: float) -> None:
        now[0] += delay + (late_by.pop(0) if late_by else 0.007)

    monkeypatch.setattr(simulator, "_now", lambda: now[0])
    monkeypatch.setattr(simulator, "_sleep", sleep)


async def test_pacing_does_not_accumulate_late_wakeups(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, [])
    node = StreamNodeClient(sample_rate=8000)
    conn = FakeConnection()
    node._ws = conn  # type: ignore[assignment]
    sent = await node.stream_pcm(bytes(320 * 4 + 100), 8000)  # 4.3 frames of 20 ms
    sent += await node.stream_silence(0.04, 8000)  # continues the same schedule
    expected = [100.0] + [100.0 + 0.02 * k + 0.007 for k in range(1, 7)]
    assert sent == pytest.approx(expected)
    assert [len(f) for f in conn.frames] == [320] * 7  # the partial frame is padded
    assert conn.frames[4] == bytes(320)
    assert node.max_send_lag_ms == 0


async def test_pacing_catches_up_after_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, [0.045])  # the first sleep wakes 45 ms late
    node = StreamNodeClient(sample_rate=8000)
    node._ws = FakeConnection()  # type: ignore[assignment]
    sent = await node.stream_pcm(bytes(320 * 5), 8000)
    # Frames 2 and 3 are overdue and go at once; frame 4 is back on schedule.
    assert sent == pytest.approx([100.0, 100.065, 100.065, 100.065, 100.087])
    assert node.max_send_lag_ms == pytest.approx(25.0)


async def test_non_realtime_sends_everything_without_sleeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_clock(monkeypatch, [])
    node = StreamNodeClient(sample_rate=RATE)
    conn = FakeConnection()
    node._ws = conn  # type: ignore[assignment]
    sent = await node.stream_pcm(CALLER, RATE, realtime=False)
    assert sent == [100.0] * (len(CALLER) // 640)
    assert b"".join(conn.frames) == CALLER


# --- whole calls against the fake agent --------------------------------------------


async def test_run_call_records_the_conversation(
    url: str, agent: FakeAgent, caller_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bot.wav"
    seen: list[str] = []
    meta = {"callid": "t-1", "virtual_number": "+910", "customer_number": "+919"}
    report = await run_call(
        url,
        wav=caller_wav,
        metadata=meta,
        seconds_of_silence_after=10,  # only an upper bound: the transfer ends the call
        save_audio=out,
        on_event=lambda e: seen.append(e.kind),
        realtime=False,
    )
    kinds = ["playAudio"] * 3 + ["killAudio", "playAudio", "transfer"]
    assert [e.kind for e in report.events] == kinds == seen
    assert report.ok, report.problems
    assert report.call_id == "t-1"
    assert ast.literal_eval(json.loads(agent.metadata[0])) == meta
    assert report.counts == {
        "playAudio": 4,
        "killAudio": 1,
        "transfer": 1,
        "disconnect": 0,
        "unknown": 0,
    }
    assert report.transfer_destination == DESTINATION
    assert flat(report.speech_segments) == pytest.approx(flat([(0.2, 0.6), (1.1, 1.4)]))
    assert report.greeting_latency_ms is not None
    assert report.greeting_latency_ms >= 0
    assert all(x is not None and x >= 0 for x in report.reply_latencies_ms)
    assert len(report.reply_latencies_ms) == 2
    assert report.bot_audio_ms == pytest.approx(400.0)
    assert (report.close_code, report.closed_by_server) == (1000, False)
    assert report.saved_audio == out
    assert read_wav(out) == (1, 2, RATE, 4 * CHUNK_BYTES // 2)


@pytest.mark.parametrize("agent", [FakeAgent(reply_rate=8000)])
async def test_a_wav_at_the_wrong_rate_is_a_problem(
    url: str, caller_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bot.wav"
    report = await run_call(
        url, wav=caller_wav, seconds_of_silence_after=10, save_audio=out, realtime=False
    )
    assert not report.ok
    assert report.counts["playAudio"] == 4
    assert len(report.problems) == 1
    assert "8000 Hz" in report.problems[0]
    assert read_wav(out)[3] == 3 * CHUNK_BYTES // 2  # the bad chunk is not recorded


@pytest.mark.parametrize("agent", [FakeAgent(finish="disconnect")])
async def test_a_server_disconnect_ends_the_call(url: str, caller_wav: Path) -> None:
    report = await run_call(url, wav=caller_wav, seconds_of_silence_after=10, realtime=False)
    assert report.counts["disconnect"] == 1
    assert report.events[-1].kind == "disconnect"
    assert (report.close_code, report.closed_by_server) == (1000, True)
    assert report.ok


async def test_client_waits_and_segments(url: str) -> None:
    async with StreamNodeClient(sample_rate=RATE) as node:
        await node.connect(url)
        sent_at = await node.send_metadata({"callid": "t-2"})
        greeting = await node.wait_for("playAudio", after=sent_at, timeout=10)
        await node.stream_pcm(CALLER + silence(0.4), RATE, realtime=False)
        moved = await node.wait_for("transfer", after=greeting.t, timeout=10)
        assert moved.destination == DESTINATION
        await node.wait_for_quiet(0.01, timeout=10)
        assert node.bot_segments == [CHUNK * 3, CHUNK]
        after_kill = node.events[-2]
        assert after_kill.kind == "playAudio"
        assert after_kill.play_start == after_kill.t
        assert (node.finished, node.closed) == (True, False)
    assert node.closed
    assert node.close_code == 1000
    assert not node.closed_by_server
    with pytest.raises(CallEnded):
        await node.wait_for("disconnect", timeout=10)


async def test_realtime_call_measures_the_reply(url: str, tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    short.write_bytes(wav_file(silence(0.1) + tone(0.3) + silence(0.1)))
    report = await run_call(url, wav=short, seconds_of_silence_after=0.5)
    assert flat(report.speech_segments) == pytest.approx(flat([(0.1, 0.4)]))
    assert report.counts["playAudio"] == 3  # greeting x2, then the reply
    (latency,) = report.reply_latencies_ms
    assert latency is not None
    assert latency > 0
    assert report.ok
    assert report.close_code == 1000


# --- the CLI -----------------------------------------------------------------------


def test_cli_call_prints_events_and_summary(
    url: str,
    agent: FakeAgent,
    caller_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bot.wav"
    args = ["call", url, "--wav", str(caller_wav), "--no-realtime", "--silence-after", "10"]
    args += ["--save-audio", str(out), "--header", "X-Test=yes"]
    args += ["--metadata", "{'callid': 'cli-1', 'call_type': 'inbound'}"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert sum(" playAudio " in line for line in lines) == 4
    assert any("killAudio" in line for line in lines)
    assert f"transfer   -> {DESTINATION}" in printed
    for text in ("greeting latency: ", "reply 1 (speech 0.20-0.60 s): ", "reply 2 ", "result: OK"):
        assert text in printed
    assert "UklGR" not in printed  # no base64 WAV ("RIFF...") on screen
    assert parse_metadata(agent.metadata[0]).call_id == "cli-1"
    assert agent.headers[0]["x-test"] == "yes"
    assert read_wav(out)[3] == 4 * CHUNK_BYTES // 2


@pytest.mark.parametrize("agent", [FakeAgent(reply_rate=8000)])
def test_cli_call_fails_on_problems(
    url: str, caller_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["call", url, "--wav", str(caller_wav), "--no-realtime", "--silence-after", "10"]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "problem: playAudio WAV is 8000 Hz" in printed
    assert "result: FAILED" in printed


def test_cli_sends_raw_metadata_verbatim(
    url: str, agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["call", url, "--raw-metadata", "not a dict", "--no-realtime", "--silence-after", "0.2"]
    assert cli.main(args) == 0  # the greeting alone makes a good call
    assert agent.metadata == ["not a dict"]
    assert "(custom metadata)" in capsys.readouterr().out


def test_cli_reports_connection_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert cli.main(["call", f"ws://127.0.0.1:{port}/voice", "--no-realtime"]) == 1
    assert "error:" in capsys.readouterr().err


def test_cli_rejects_a_rate_mismatch(caller_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["call", "ws://127.0.0.1:9/voice", "--wav", str(caller_wav), "--sample-rate", "8000"]
    assert cli.main(args) == 1
    assert "resample" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad", [["--header", "novalue"], ["--metadata", "{'no_callid': 1}"], ["--metadata", "[1"]]
)
def test_cli_rejects_bad_arguments(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["call", "ws://127.0.0.1:9/voice", *bad])
    assert exc.value.code == 2


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_serve_runs_uvicorn_with_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("HOST", "127.0.0.9")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("WORKERS", "1")  # one process: uvicorn.run itself (workers: test_workers)
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--host", "::1", "--port", "8001", "--reload"]) == 0
    keys = ("host", "port", "log_level", "reload")
    app, kwargs = calls[0]
    assert app == "server:app"
    assert {k: kwargs[k] for k in keys} == {
        "host": "127.0.0.9",
        "port": 9123,
        "log_level": "warning",
        "reload": False,
    }
    assert {k: calls[1][1][k] for k in ("host", "port", "reload")} == {
        "host": "::1",
        "port": 8001,
        "reload": True,
    }


def test_extensions_register_subcommands(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(sub: Any) -> None:
        demo = sub.add_parser("kpi-demo")
        demo.set_defaults(func=lambda args: 7)

    monkeypatch.setattr(cli, "_register_extensions", register)
    assert cli.main(["kpi-demo"]) == 7
    with pytest.raises(SystemExit):
        cli.main([])  # a command is required


def test_help_does_not_import_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    assert "call" in capsys.readouterr().out
    assert isinstance(cli.build_parser(), argparse.ArgumentParser)
