"""What the fake Deepgram remembers about each connection, for assertions and the benchmark.

Secrets are never stored: of the ``Authorization`` header only the scheme is kept.
Timeline entries are ``(time.monotonic(), "sent" | "recv", summary)``; on Linux the
monotonic clock is shared by every process on the host, so a benchmark in another
process can compare these times with its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from .deepgram_engine import ListenOptions, Message

__all__ = ["DeepgramConnection", "HandshakeRejection", "TimelineEvent", "summarize"]

Direction = Literal["sent", "recv"]
TimelineEvent = tuple[float, Direction, dict[str, Any]]


def summarize(message: Message) -> dict[str, Any]:
    """A small dict for the timeline; Results lose their word lists and metadata."""
    if message.get("type") != "Results":
        return dict(message)
    alternatives = message["channel"]["alternatives"]
    return {
        "type": "Results",
        "is_final": message["is_final"],
        "speech_final": message["speech_final"],
        "from_finalize": message["from_finalize"],
        "transcript": alternatives[0]["transcript"] if alternatives else "",
        "start": message["start"],
        "duration": message["duration"],
    }


@dataclass(frozen=True, slots=True)
class HandshakeRejection:
    at: float
    status: int
    reason: str
    path: str
    auth_scheme: str | None


@dataclass(eq=False)
class DeepgramConnection:
    """One accepted WebSocket connection to /v1/listen."""

    id: int
    request_id: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # credentials redacted
    auth_scheme: str | None  # "token" / "bearer" / "subprotocol:token" / None
    opened_at: float = field(default_factory=time.monotonic)
    options: ListenOptions | None = None
    audio: bytearray = field(default_factory=bytearray, repr=False)  # if the fake keeps audio
    audio_bytes: int = 0
    audio_frames: int = 0
    keepalives: int = 0
    finalizes: int = 0
    closestream: bool = False
    violations: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["server", "client"] | None = None
    closed_at: float | None = None
    events: list[TimelineEvent] = field(default_factory=list, repr=False)
    _closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def record(self, direction: Direction, summary: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), direction, summary))

    def mark_closed(self, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        self.closed_at = time.monotonic()
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._closed.wait()

    def sent(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Summaries of the JSON messages sent, optionally of one ``type``."""
        return [
            summary
            for _, direction, summary in self.events
            if direction == "sent" and (type_ is None or summary.get("type") == type_)
        ]

    def first_sent_at(self, type_: str, **match: Any) -> float | None:
        """Monotonic send time of the first message of ``type_`` whose fields match."""
        for at, direction, summary in self.events:
            if direction != "sent" or summary.get("type") != type_:
                continue
            if all(summary.get(key) == value for key, value in match.items()):
                return at
        return None

    @property
    def final_transcripts(self) -> list[str]:
        """Transcripts of the non-empty final Results sent, in order."""
        return [s["transcript"] for s in self.sent("Results") if s["is_final"] and s["transcript"]]

    def to_json(self, since: float | None = None) -> dict[str, Any]:
        events = [
            [at, direction, summary]
            for at, direction, summary in self.events
            if since is None or at > since
        ]
        return {
            "id": self.id,
            "request_id": self.request_id,
            "query": self.query,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "audio_bytes": self.audio_bytes,
            "violations": list(self.violations),
            "events": events,
        }
