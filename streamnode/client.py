"""A Knowlarity IVR Stream Node simulator: the other end of our ``/voice`` WebSocket.

It behaves like the node does on a real call: one metadata text frame, then the caller's
audio as binary 16-bit mono PCM frames paced in real time, while it records every event
our server sends back (``playAudio``, ``killAudio``, ``transfer``, ``disconnect``) and
checks each ``playAudio`` WAV the way the node would need it. Users run it through
``voice-agent call``; the end-to-end tests and the benchmark use it as a library, with
hundreds of clients in one process, so receiving is kept cheap (a WAV header parse, no
per-sample work) and pacing follows an absolute schedule so it never drifts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from audio.wav import WavInfo, parse_wav
from wire.knowlarity import KillAudio, PlayAudio, Transfer, UnknownEvent, parse_outgoing

EVENT_KINDS = ("playAudio", "killAudio", "transfer", "disconnect", "unknown")
MAX_FRAME_BYTES = 16 * 1024 * 1024  # a long greeting sent as one playAudio still fits
DEFAULT_SAMPLE_RATE = 16000
# Playback that runs dry for less than this and carries on is an underrun inside a reply
# (longer silences are turns: the caller speaking, the bot thinking).
STUTTER_GAP_S = 0.3

# Indirection so tests can drive pacing with a fake clock.
_now = time.monotonic
_sleep = asyncio.sleep


class SimulatorError(Exception):
    """The simulated call cannot be run as asked (bad input file, rate mismatch)."""


class CallEnded(Exception):
    """The connection closed before the awaited event arrived."""


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One message from our server, as the node saw it."""

    t: float  # time.monotonic() when received
    kind: str  # one of EVENT_KINDS
    raw_len: int  # size of the frame as sent, in bytes (text frames: characters)
    wav: WavInfo | None = None  # playAudio only, when the WAV parsed
    destination: str | None = None  # transfer only
    duration_ms: float = 0.0  # playAudio only: length of the audio it carries
    play_start: float | None = None  # playAudio only: when the node starts playing it


def format_metadata(metadata: Mapping[str, Any]) -> str:
    """The documented form: a JSON string wrapping a Python-style single-quoted dict."""
    return json.dumps(str(dict(metadata)))


def default_metadata() -> dict[str, str]:
    return {
        "callid": f"sim-{secrets.token_hex(8)}",
        "virtual_number": "+910000000000",
        "customer_number": "+919999999999",
        "call_type": "inbound",
    }


class StreamNodeClient:
    """One simulated call's WebSocket, with a background receiver recording events.

    Use as ``async with StreamNodeClient(sample_rate=16000) as node: await
    node.connect(url)``. ``keep_audio=False`` drops the bot's PCM after checking it
    (events keep their header and duration), which the benchmark wants at scale.
    """

    def __init__(
        self,
        *,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        on_event: Callable[[ReceivedEvent], None] | None = None,
        keep_audio: bool = True,
        jitter_s: float = 0.0,
        jitter_seed: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.on_event = on_event
        # A jittery line: each message from the server reaches the node 0..jitter_s late
        # (seeded), never before the one sent ahead of it.
        self.jitter_s = jitter_s
        self._jitter = random.Random(jitter_seed)
        self._last_arrival = 0.0
        self.underruns: list[float] = []  # gaps (s) in the bot's playback inside a reply
        self.keep_audio = keep_audio
        self.events: list[ReceivedEvent] = []
        self.problems: list[str] = []
        self.counts: Counter[str] = Counter()
        self.bot_audio = bytearray()
        self.kill_offsets: list[int] = []  # byte offsets into bot_audio of each killAudio
        self.playing_until = 0.0  # monotonic time the node's playback queue runs dry
        self.transfer_destination: str | None = None
        self.last_play_at: float | None = None
        self.received_audio_ms = 0.0  # every playAudio's duration, kept even without PCM
        self.metadata_sent_at: float | None = None
        self.max_send_lag_ms = 0.0  # how far behind schedule pacing ever fell
        self._ws: ClientConnection | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._next_frame_at: float | None = None
        self._closed = False
        self._closing_ourselves = False
        self._finished = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- connection ---------------------------------------------------------------

    async def connect(
        self,
        url: str,
        *,
        extra_headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        open_timeout: float = 10,
    ) -> None:
        self._ws = await connect(
            url,
            additional_headers=extra_headers,
            open_timeout=open_timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,  # the node sends raw PCM; deflate would only cost CPU
        )
        self._receiver = asyncio.create_task(self._receive(self._ws))

    async def close(self, code: int = 1000) -> None:
        """Close normally and wait for the receiver to drain."""
        if self._ws is None:
            return
        if not self._closed:
            self._closing_ourselves = True
        await self._ws.close(code)
        if self._receiver is not None:
            await self._receiver

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def finished(self) -> bool:
        """The call is over for the node: transfer, disconnect or a closed socket."""
        return self._finished

    @property
    def close_code(self) -> int | None:
        return None if self._ws is None else self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return None if self._ws is None else self._ws.close_reason

    @property
    def closed_by_server(self) -> bool:
        """Whether the server ended the connection (a close frame or a dropped socket)."""
        if not self._closed or self._ws is None:
            return False
        return not self._closing_ourselves or bool(self._ws.protocol.close_rcvd_then_sent)

    def _conn(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("StreamNodeClient.connect() has not been called")
        return self._ws

    # --- sending ------------------------------------------------------------------

    async def send_metadata(self, raw: str | Mapping[str, Any]) -> float:
        """Send the metadata frame; a mapping goes in the documented form, a str verbatim.

        Returns the monotonic time it was sent (the start of greeting latency).
        """
        text = raw if isinstance(raw, str) else format_metadata(raw)
        await self._conn().send(text)
        self.metadata_sent_at = _now()
        return self.metadata_sent_at

    async def send_audio(self, pcm: bytes) -> None:
        await self._conn().send(pcm)

    async def stream_pcm(
        self, pcm: bytes, sample_rate: int, frame_ms: int = 20, realtime: bool = True
    ) -> list[float]:
        """Send PCM as frame_ms frames; returns each frame's send time (monotonic).

        In real time, frame k goes out at t0 + k*frame on an absolute schedule that
        carries over between calls, so a late wake-up never shifts later frames. Stops
        early, without error, once the call is finished.
        """
        frame_bytes = sample_rate * frame_ms // 1000 * 2
        if frame_bytes <= 0:
            raise ValueError(f"frame of {frame_ms} ms at {sample_rate} Hz is empty")
        frame_s = frame_ms / 1000
        ws = self._conn()
        sent: list[float] = []
        now = _now()
        due = now if self._next_frame_at is None else max(now, self._next_frame_at)
        for start in range(0, len(pcm), frame_bytes):
            if self._finished:
                break
            if realtime:
                await self._sleep_until(due)
            else:
                await asyncio.sleep(0)  # let the receiver run between frames
            frame = pcm[start : start + frame_bytes]
            if len(frame) < frame_bytes:
                frame = frame + bytes(frame_bytes - len(frame))  # the node sends whole frames
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break
            sent.append(_now())
            due += frame_s
        self._next_frame_at = due if realtime else None
        return sent

    async def stream_silence(
        self, seconds: float, sample_rate: int, realtime: bool = True, frame_ms: int = 20
    ) -> list[float]:
        n_bytes = round(seconds * sample_rate) * 2
        return await self.stream_pcm(bytes(n_bytes), sample_rate, frame_ms, realtime)

    async def _sleep_until(self, due: float) -> None:
        delay = due - _now()
        if delay > 0:
            await _sleep(delay)
        else:
            self.max_send_lag_ms = max(self.max_send_lag_ms, -delay * 1000)

    # --- receiving ----------------------------------------------------------------

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self.handle_message(message, _now())
        except ConnectionClosed:
            pass  # the close code tells how it ended
        finally:
            self._closed = True
            self._finished = True
            self._notify()

    def handle_message(self, message: str | bytes, now: float) -> ReceivedEvent:
        """Record one message from the server as received at ``now`` (monotonic); on a
        jittery line it arrives (``t``) a random while later, in order."""
        if self.jitter_s > 0:
            now = max(self._last_arrival, now + self._jitter.uniform(0.0, self.jitter_s))
            self._last_arrival = now
        event = self._classify(message, now)
        self._record(event)
        return event

    def _classify(self, message: str | bytes, now: float) -> ReceivedEvent:
        size = len(message)
        if isinstance(message, bytes):
            self.problems.append(f"unexpected binary frame of {size} bytes")
            return ReceivedEvent(now, "unknown", size)
        try:
            event = parse_outgoing(message)
        except UnknownEvent as exc:
            self.problems.append(str(exc))
            return ReceivedEvent(now, "unknown", size)
        if isinstance(event, PlayAudio):
            return self._play_audio(event.wav, now, size)
        if isinstance(event, Transfer):
            return ReceivedEvent(now, "transfer", size, destination=event.destination)
        return ReceivedEvent(
            now, "killAudio" if isinstance(event, KillAudio) else "disconnect", size
        )

    def _play_audio(self, wav_bytes: bytes, now: float, raw_len: int) -> ReceivedEvent:
        try:
            wav = parse_wav(wav_bytes)
        except ValueError as exc:
            self.problems.append(f"playAudio content is not a PCM WAV: {exc}")
            return ReceivedEvent(now, "playAudio", raw_len)
        problem = self._wav_problem(wav)
        if problem:
            self.problems.append(f"playAudio {problem}")
        duration_ms = wav.duration_s * 1000
        dry_s = now - self.playing_until
        if self.playing_until and 0 < dry_s < STUTTER_GAP_S:
            self.underruns.append(dry_s)  # the caller heard the bot stop for a moment
        play_start = max(now, self.playing_until)
        self.playing_until = play_start + duration_ms / 1000
        if problem is None and self.keep_audio:
            self.bot_audio += wav.pcm
        if not self.keep_audio:  # direct construction: dataclasses.replace is 10x slower
            wav = WavInfo(wav.channels, wav.sample_width, wav.sample_rate, b"")
        return ReceivedEvent(now, "playAudio", raw_len, wav, None, duration_ms, play_start)

    def _wav_problem(self, wav: WavInfo) -> str | None:
        if wav.channels != 1:
            return f"WAV has {wav.channels} channels, expected mono"
        if wav.sample_width != 2:
            return f"WAV is {wav.sample_width * 8}-bit, expected 16-bit"
        if wav.sample_rate != self.sample_rate:
            return f"WAV is {wav.sample_rate} Hz, the node is at {self.sample_rate} Hz"
        return None

    def _record(self, event: ReceivedEvent) -> None:
        self.events.append(event)
        self.counts[event.kind] += 1
        if event.kind == "playAudio":
            self.last_play_at = event.t
            self.received_audio_ms += event.duration_ms
        elif event.kind == "killAudio":
            # Knowlarity drops whatever was queued: playback stops now.
            self.playing_until = event.t
            self.kill_offsets.append(len(self.bot_audio))
        elif event.kind == "transfer":
            self.transfer_destination = event.destination
            self._finished = True
        elif event.kind == "disconnect":
            self._finished = True
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception as exc:  # a broken callback must not stop the recording
                self.problems.append(f"on_event callback raised {exc!r}")
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter once; each re-checks from where it left off.
        self._changed.set()
        self._changed = asyncio.Event()

    # --- observing ----------------------------------------------------------------

    @property
    def bot_segments(self) -> list[bytes]:
        """Bot audio split at each killAudio (the node discarded what followed in queue)."""
        bounds = [0, *self.kill_offsets, len(self.bot_audio)]
        pieces = (bytes(self.bot_audio[a:b]) for a, b in itertools.pairwise(bounds))
        return [p for p in pieces if p]

    @property
    def is_playing(self) -> bool:
        return _now() < self.playing_until

    # The timeout parameters are the API callers want: a budget per wait.
    async def wait_for(
        self,
        kind: str,
        *,
        after: float | None = None,
        timeout: float,  # noqa: ASYNC109
    ) -> ReceivedEvent:
        """The first event of ``kind`` received after ``after`` (monotonic), if given.

        Raises TimeoutError, or CallEnded if the connection closes first.
        """
        index = 0
        async with asyncio.timeout(timeout):
            while True:
                events = self.events
                for event in events[index:]:
                    if event.kind == kind and (after is None or event.t > after):
                        return event
                index = len(events)
                if self._closed:
                    raise CallEnded(f"connection closed before a {kind} event")
                await self._changed.wait()

    async def wait_for_quiet(self, seconds: float, timeout: float) -> None:  # noqa: ASYNC109
        """Return once no playAudio has arrived for ``seconds`` (or the call closed)."""
        started = _now()
        async with asyncio.timeout(timeout):
            while not self._closed:
                last = self.last_play_at
                quiet_at = (started if last is None else max(last, started)) + seconds
                remaining = quiet_at - _now()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the connection is closed; False if still open at the timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._closed:
                    await self._changed.wait()
        return self._closed

    async def wait_finished(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the call is finished; False if it is still going at the timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._finished:
                    await self._changed.wait()
        return self._finished


# --- a live phone line ---------------------------------------------------------------
