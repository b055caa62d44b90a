"""Join the callers' records with the fake STT's timeline and compute the figures.

Each call is one Deepgram connection. A call is matched to the connection that opened
just after its metadata frame and whose ``speech_final`` send times follow the call's
utterance ends most closely (greedy over all pairs by that cost); the turn overhead is
then, per the issue: first reply ``playAudio`` received - ``speech_final`` sent by the
fake STT - scripted LLM time to the end of sentence one - scripted TTS first audio.
"From speech end" starts at the caller's last speech frame instead, less the scripted
endpointing: what the caller waits through, including the server's STT forwarding.
"Past the fill" also takes off the scripted wait for the first 100 ms of TTS audio,
which an exact-100 ms chunker cannot avoid: what is left is the server's own work.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pipeline.sentences import SentenceSplitter
from testkit.cartesia_script import SpeechSettings
from testkit.openai_script import default_reply_text, split_tokens

from .procs import Latencies

MAX_ENDPOINT_S = 3.0  # a speech_final further than this after the utterance is not its own
STT_DEFAULT_TEXT = "hello there"  # what the fake STT hears when nothing is scripted


@dataclass
class SttConn:
    opened_at: float
    finals: list[float] = field(default_factory=list)  # speech_final send times
    texts: list[str] = field(default_factory=list)  # the utterance each one closes
    speech_started: list[float] = field(default_factory=list)
    words: list[float] = field(default_factory=list)  # Results with a transcript

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SttConn:
        conn = cls(opened_at=float(raw["opened_at"]))
        pending: list[str] = []
        for at, direction, summary in raw["events"]:
            if direction != "sent":
                continue
            kind = summary.get("type")
            if kind == "SpeechStarted":
                conn.speech_started.append(at)
            elif kind == "Results":
                text = summary.get("transcript") or ""
                if text:
                    conn.words.append(at)
                    if summary.get("is_final"):
                        pending.append(text)
                if summary.get("speech_final"):
                    conn.finals.append(at)
                    conn.texts.append(" ".join(pending))
                    pending = []
        return conn

    def final_after(self, t: float) -> int | None:
        i = bisect.bisect_right(self.finals, t)
        if i < len(self.finals) and self.finals[i] - t <= MAX_ENDPOINT_S:
            return i
        return None


@lru_cache(maxsize=256)
def llm_sentence_one_ms(user_text: str, lat: Latencies) -> float:
    """Scripted time from the LLM request to the token that completes sentence one."""
    reply = default_reply_text([{"role": "user", "content": user_text}])
    splitter = SentenceSplitter()
    for i, token in enumerate(split_tokens(reply)):
        if splitter.push(token):
            return lat.llm_first_token_ms + i * lat.llm_per_token_ms
    n = len(split_tokens(reply))  # one sentence: flushed at the end of the stream
    return lat.llm_first_token_ms + (n - 1) * lat.llm_per_token_ms


@lru_cache(maxsize=8)
def tts_fill_ms(lat: Latencies, audio_chunk_ms: int = 100) -> float:
    """Scripted time from the TTS's first audio until one whole ``playAudio`` of it is due.

    The fake sends its first audio in pieces smaller than a chunk (``SpeechSettings``), so
    a server that sends exact 100 ms chunks must wait for this much more audio.
    """
    audio_ms = 0.0
    for piece_ms in itertools.cycle(SpeechSettings().chunk_ms):
        due_ms = audio_ms / lat.tts_realtime_factor if lat.tts_realtime_factor > 0 else 0.0
        audio_ms += piece_ms
        if audio_ms >= audio_chunk_ms:
            return due_ms
    raise AssertionError("unreachable: the cycle is endless")


def scripted_ms(heard: str, lat: Latencies) -> float:
    """Scripted provider time of a turn: LLM to the end of sentence one, TTS first audio."""
    return llm_sentence_one_ms(heard, lat) + lat.tts_first_audio_ms


def _cost(call: dict[str, Any], conn: SttConn, endpointing_s: float) -> float:
    """How far this connection's finals sit from where the call's utterances put them.

    The right connection has a ``speech_final`` about ``endpointing_s`` after each
    utterance ends (plus the forwarding delay); a wrong one has them anywhere, so the
    distance to the *expected* time is used, not merely "the next final after".
    """
    total, n = 0.0, 0
    for turn in call["turns"]:
        end = float(turn["speech_end"])
        expected = end + endpointing_s
        i = bisect.bisect_left(conn.finals, expected)
        near = [conn.finals[j] for j in (i - 1, i) if 0 <= j < len(conn.finals)]
        near = [f for f in near if f >= end]
        total += min((abs(f - expected) for f in near), default=MAX_ENDPOINT_S)
        n += 1
    opened = abs(conn.opened_at - float(call["metadata_sent_at"]))
    return (total / n if n else MAX_ENDPOINT_S) + 0.1 * opened


def match(
    calls: list[dict[str, Any]], conns: list[SttConn], endpointing_s: float = 0.3
) -> dict[int, SttConn]:
    """call index -> its STT connection (calls with no utterance are left out)."""
    by_open = sorted(range(len(conns)), key=lambda j: conns[j].opened_at)
    opens = [conns[j].opened_at for j in by_open]
    pairs: list[tuple[float, int, int]] = []
    for ci, call in enumerate(calls):
        sent = call.get("metadata_sent_at")
        if sent is None or not call["turns"]:
            continue
        lo = bisect.bisect_left(opens, sent - 0.5)
        hi = bisect.bisect_right(opens, sent + 5.0)
        for j in by_open[lo:hi]:
            pairs.append((_cost(call, conns[j], endpointing_s), ci, j))
    pairs.sort()
    out: dict[int, SttConn] = {}
    used: set[int] = set()
    for cost, ci, j in pairs:
        if ci in out or j in used or cost >= MAX_ENDPOINT_S:
            continue
        out[ci] = conns[j]
        used.add(j)
    return out


def figures(
    calls: list[dict[str, Any]], timeline: list[dict[str, Any]], lat: Latencies
) -> dict[str, list[float]]:
    """Raw samples (ms) of each figure over all calls."""
    conns = [SttConn.from_json(raw) for raw in timeline]
    matched = match(calls, conns, lat.stt_endpointing_ms / 1000)
    out: dict[str, list[float]] = {
        "greeting_ms": [],
        "turn_overhead_ms": [],
        "turn_overhead_past_fill_ms": [],
        "turn_overhead_from_speech_end_ms": [],
        "turn_first_audio_ms": [],
        "stt_endpoint_ms": [],
        "barge_in_from_speech_started_ms": [],
        "barge_in_from_words_ms": [],
        "barge_in_from_caller_speech_ms": [],
    }
    for ci, call in enumerate(calls):
        if call["greeting_first_play"] is not None and call["metadata_sent_at"] is not None:
            out["greeting_ms"].append(
                (call["greeting_first_play"] - call["metadata_sent_at"]) * 1e3
            )
        conn = matched.get(ci)
        for turn in call["turns"]:
            if turn["first_play"] is None:
                continue
            waited_ms = (turn["first_play"] - turn["speech_end"]) * 1e3
            out["turn_first_audio_ms"].append(waited_ms)
            i = None if conn is None else conn.final_after(turn["speech_end"])
            # What the caller waits through, less what the script accounts for: the STT's
            # endpointing (in audio time, from the caller's last speech) and the providers.
            # It needs no STT match, so it also holds when the fake's finals are late.
            heard = conn.texts[i] if conn is not None and i is not None else STT_DEFAULT_TEXT
            out["turn_overhead_from_speech_end_ms"].append(
                waited_ms - lat.stt_endpointing_ms - scripted_ms(heard, lat)
            )
            if conn is None or i is None or turn["first_play"] < conn.finals[i]:
                continue
            final_at = conn.finals[i]
            scripted = scripted_ms(conn.texts[i], lat)
            overhead = (turn["first_play"] - final_at) * 1e3 - scripted
            out["turn_overhead_ms"].append(overhead)
            out["turn_overhead_past_fill_ms"].append(overhead - tts_fill_ms(lat))
            out["stt_endpoint_ms"].append((final_at - turn["speech_end"]) * 1e3)
        for barge in call["barge_ins"]:
            kill, start = barge["kill_at"], barge["speech_start"]
            if kill is None or start is None:
                continue
            out["barge_in_from_caller_speech_ms"].append((kill - start) * 1e3)
            if conn is None:
                continue
            for key, times in (
                ("barge_in_from_speech_started_ms", conn.speech_started),
                ("barge_in_from_words_ms", conn.words),
            ):
                k = bisect.bisect_right(times, start - 0.02)
                if k < len(times) and times[k] <= kill:
                    out[key].append((kill - times[k]) * 1e3)
    out["_matched_calls"] = [float(len(matched))]
    return out
