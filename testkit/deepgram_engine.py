"""Sans-I/O core of the fake Deepgram live STT: PCM in, Deepgram JSON messages out.

Everything here runs on AUDIO time (samples received), never on the wall clock, so the
same audio gives the same messages however it is chunked or paced. A 20 ms window whose
RMS is above the threshold is speech; a run of ``min_speech_ms`` of speech starts a
segment, which takes the next scripted transcript. While speech continues, interim
Results reveal the transcript word by word; ``endpointing`` ms of silence ends it with a
final (``speech_final``), and ``utterance_end_ms`` of silence after the last word sends
UtteranceEnd. Message shapes follow Deepgram's live ``/v1/listen`` API as typed by the
deepgram-sdk v7 ``ListenV1*`` models.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = [
    "ListenOptions",
    "ListenParamError",
    "Message",
    "TranscriptEngine",
    "VadSettings",
]

Message = dict[str, Any]

_MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bc1f"
_MODEL_VERSION = "2024-11-21.0"
_WORD_CONFIDENCE = 0.99
_TRANSCRIPT_CONFIDENCE = 0.98
_WORD_FILL = 0.85  # a word fills this share of its slot; the rest is the gap to the next
# Not a word character: Devanagari vowel signs and viramas are marks (M*), so \w alone
# would cut "हाँ" down to "ह".
_STRIP = re.compile(r"[^\w'\u0900-\u0963\u0966-\u097f]+")  # the dandas (0964-5) go


class ListenParamError(ValueError):
    """A query parameter the real service would reject at the handshake (HTTP 400)."""


def _flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ListenParamError(f"{name} must be true or false, got {raw!r}")


def _integer(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ListenParamError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ListenParamError(f"{name} must be at least {minimum}, got {value}")
    return value


def _endpointing(query: Mapping[str, str]) -> int | None:
    raw = query.get("endpointing", "").strip().lower()
    if raw == "false":
        return None
    if raw in ("", "true"):
        return 10  # the service default
    return _integer(query, "endpointing", minimum=0)


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """The /v1/listen query parameters the fake acts on."""

    model: str = "base"
    language: str = "en"
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    interim_results: bool = False
    endpointing_ms: int | None = 10  # None: endpointing=false
    utterance_end_ms: int | None = None
    vad_events: bool = False
    smart_format: bool = False
    punctuate: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ListenOptions:
        return cls(
            model=query.get("model", "base"),
            language=query.get("language", "en"),
            encoding=query.get("encoding"),
            sample_rate=_integer(query, "sample_rate", minimum=1),
            channels=_integer(query, "channels", minimum=1) or 1,
            interim_results=_flag(query, "interim_results"),
            endpointing_ms=_endpointing(query),
            utterance_end_ms=_integer(query, "utterance_end_ms", minimum=1),
            vad_events=_flag(query, "vad_events"),
            smart_format=_flag(query, "smart_format"),
            punctuate=_flag(query, "punctuate"),
        )

    def audio_problem(self) -> str | None:
        """Why the fake cannot decode this stream's audio (closed as DATA-0000), if so."""
        if self.encoding != "linear16":
            return f"unsupported encoding {self.encoding!r} (the fake decodes linear16 only)"
        if self.sample_rate is None:
            return "linear16 needs sample_rate"
        return None

    @property
    def punctuated(self) -> bool:
        return self.punctuate or self.smart_format

    @property
    def utterance_end_active(self) -> int | None:
        """utterance_end_ms when UtteranceEnd can be sent (it needs interim_results)."""
        return self.utterance_end_ms if self.interim_results else None


@dataclass(frozen=True, slots=True)
class VadSettings:
    """How the fake hears speech; all durations are audio time."""

    threshold_rms: float = 500.0  # int16 RMS; ~-36 dBFS. espeak-ng speech is 1000-8000
    window_ms: int = 20
    min_speech_ms: int = 40  # speech this long (consecutive windows) starts a segment
    interim_interval_ms: int = 200
    silence_result_ms: int = 3000  # empty final Results this often during silence


@dataclass(slots=True)
class _Segment:
    tokens: list[str]
    onset: int  # frames
    last_speech_end: int
    next_interim_at: int
    interims: int = 0


@dataclass(frozen=True, slots=True)
class _PendingUtteranceEnd:
    due: int
    last_word_end: float


class TranscriptEngine:
    """One live stream's transcription state. Not thread-safe; no I/O."""

    def __init__(
        self,
        options: ListenOptions,
        *,
        next_transcript: Callable[[], str],
        request_id: str | None = None,
        vad: VadSettings | None = None,
        created: datetime | None = None,
    ) -> None:
        if options.sample_rate is None:
            raise ValueError("sample_rate is required")
        self._opts = options
        self._next_transcript = next_transcript
        self._vad = vad or VadSettings()
        self.request_id = request_id or str(uuid.uuid4())
        stamp = (created or datetime.now(UTC)).astimezone(UTC)
        self._created = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._rate = options.sample_rate
        self._win_frames = max(1, self._rate * self._vad.window_ms // 1000)
        self._win_bytes = self._win_frames * options.channels * 2
        window_samples = self._win_frames * options.channels
        self._energy_threshold = window_samples * float(self._vad.threshold_rms) ** 2
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._carry = b""
        self._pos = 0  # frames analysed
        self._cursor = 0  # start of the next Results
        self._run_start: int | None = None
        self._segment: _Segment | None = None
        self._pending: _PendingUtteranceEnd | None = None

    # --- public ------------------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self._bytes / (2 * self._opts.channels) / self._rate

    def feed(self, pcm: bytes) -> list[Message]:
        """Take any number of bytes of linear16 PCM; return the messages it triggers."""
        self._sha.update(pcm)
        self._bytes += len(pcm)
        data = self._carry + pcm if self._carry else pcm
        windows = len(data) // self._win_bytes
        self._carry = data[windows * self._win_bytes :]
        out: list[Message] = []
        if windows:
            for loud in self._loud_windows(data, windows):
                self._pos += self._win_frames
                self._step(loud, out)
        return out

    def finalize(self) -> list[Message]:
        """Finalize: flush the segment in progress as a final with ``from_finalize``."""
        if self._segment is not None:
            return [self._finish(self._segment, speech_final=False, from_finalize=True)]
        if self._pos > self._cursor:
            return [self._results([], 0, 0, is_final=True, from_finalize=True)]
        return []

    def close(self) -> list[Message]:
        """CloseStream: the pending final, if any, then the summary Metadata."""
        out: list[Message] = []
        if self._segment is not None:
            out.append(self._finish(self._segment, speech_final=False))
        out.append(self.metadata())
        return out

    def metadata(self) -> Message:
        model = self._model_info()
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": self._created,
            "duration": round(self.audio_seconds, 3),
            "channels": self._opts.channels,
            "models": [_MODEL_UUID],
            "model_info": {_MODEL_UUID: model},
        }

    # --- audio analysis ------------------------------------------------------------------

    def _loud_windows(self, data: bytes, windows: int) -> list[bool]:
        """Per 20 ms window: is its RMS above the threshold? (sum of squares vs n * thr^2)"""
        count = windows * self._win_bytes // 2
        samples = np.frombuffer(data, dtype="<i2", count=count).astype(np.float32)
        rows = samples.reshape(windows, -1)
        loud: list[bool] = (np.einsum("ij,ij->i", rows, rows) > self._energy_threshold).tolist()
        return loud

    def _frames(self, ms: int) -> int:
        return self._rate * ms // 1000

    def _step(self, loud: bool, out: list[Message]) -> None:
        end = self._pos
        segment = self._segment
        if loud:
            if segment is None:
                start = self._run_start if self._run_start is not None else end - self._win_frames
                self._run_start = start
                if end - start >= self._frames(self._vad.min_speech_ms):
                    self._start_segment(start, end, out)
            else:
                segment.last_speech_end = end
                if self._opts.interim_results and end >= segment.next_interim_at:
                    out.append(self._interim(segment))
            return
        self._run_start = None
        if segment is not None:
            self._check_endpoint(segment, out)
        else:
            self._check_silence(out)

    def _start_segment(self, onset: int, end: int, out: list[Message]) -> None:
        interval = self._frames(self._vad.interim_interval_ms)
        tokens = self._next_transcript().split()
        self._segment = _Segment(tokens, onset, end, onset + interval)
        self._run_start = None
        self._pending = None
        if self._opts.vad_events:
            out.append({"type": "SpeechStarted", "channel": [0], "timestamp": self._sec(onset)})

    def _check_endpoint(self, segment: _Segment, out: list[Message]) -> None:
        silence = self._pos - segment.last_speech_end
        endpointing = self._opts.endpointing_ms
        utterance_end = self._opts.utterance_end_active
        if endpointing is not None:
            if silence >= self._frames(endpointing):
                out.append(self._finish(segment, speech_final=True))
                self._check_silence(out)
        elif utterance_end is not None:
            if silence >= self._frames(utterance_end):
                out.append(self._finish(segment, speech_final=False))
                self._check_silence(out)
        elif silence >= self._frames(self._vad.silence_result_ms):
            out.append(self._finish(segment, speech_final=False))

    def _check_silence(self, out: list[Message]) -> None:
        pending = self._pending
        if pending is not None and self._pos >= pending.due:
            self._pending = None
            out.append(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": pending.last_word_end}
            )
        if self._pos - self._cursor >= self._frames(self._vad.silence_result_ms):
            out.append(self._results([], 0, 0, is_final=True))

    def _finish(
        self, segment: _Segment, *, speech_final: bool, from_finalize: bool = False
    ) -> Message:
        """End the segment with its final; UtteranceEnd follows after the configured gap."""
        self._segment = None
        utterance_end = self._opts.utterance_end_active
        if utterance_end is not None:
            due = segment.last_speech_end + self._frames(utterance_end)
            self._pending = _PendingUtteranceEnd(due, self._sec(segment.last_speech_end))
        return self._results(
            segment.tokens,
            segment.onset,
            segment.last_speech_end,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
        )

    # --- message builders ------------------------------------------------------------------

    def _interim(self, segment: _Segment) -> Message:
        segment.interims += 1
        segment.next_interim_at = self._pos + self._frames(self._vad.interim_interval_ms)
        shown = segment.tokens[: min(len(segment.tokens), segment.interims)]
        return self._results(shown, segment.onset, self._pos, is_final=False)

    def _results(
        self,
        tokens: list[str],
        speech_start: int,
        speech_end: int,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> Message:
        words = self._words(tokens, speech_start, speech_end)
        if self._opts.punctuated:
            transcript = " ".join(w["punctuated_word"] for w in words)
        else:
            transcript = " ".join(w["word"] for w in words)
        start = self._cursor
        if is_final:
            self._cursor = self._pos
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": self._sec(self._pos - start),
            "start": self._sec(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": _TRANSCRIPT_CONFIDENCE if words else 0.0,
                        "words": words,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": self._model_info(),
                "model_uuid": _MODEL_UUID,
            },
        }

    def _words(self, tokens: list[str], start: int, end: int) -> list[dict[str, Any]]:
        pairs = [(tok, _STRIP.sub("", tok).lower()) for tok in tokens]
        pairs = [(tok, word) for tok, word in pairs if word]
        if not pairs:
            return []
        slot = (end - start) / len(pairs)
        words: list[dict[str, Any]] = []
        for i, (token, word) in enumerate(pairs):
            w_start = start + i * slot
            w_end = end if i == len(pairs) - 1 else w_start + slot * _WORD_FILL
            entry: dict[str, Any] = {
                "word": word,
                "start": self._sec(w_start),
                "end": self._sec(w_end),
                "confidence": _WORD_CONFIDENCE,
            }
            if self._opts.punctuated:
                entry["punctuated_word"] = token
            words.append(entry)
        return words

    def _model_info(self) -> dict[str, str]:
        model = self._opts.model
        return {"name": f"general-{model}", "version": _MODEL_VERSION, "arch": model}

    def _sec(self, frames: float) -> float:
        return round(frames / self._rate, 3)
