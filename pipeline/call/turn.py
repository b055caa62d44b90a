"""One turn of the conversation (a reply, or a fixed line such as the greeting)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipeline.playout import SpokenSpan
from pipeline.providers.base import Message


@dataclass(slots=True)
class Turn:
    """One reply (or a fixed line such as the greeting) and what became of it."""

    user_text: str | None
    started: float
    number: int = 0  # the call's turn count when it began; 0 for fixed lines
    end_of_speech_at: float | None = None  # the caller stopped talking (VAD), if known
    llm_first_token_at: float | None = None
    tts_first_audio_at: float | None = None
    failed: bool = False  # ended in the fallback line
    spans: list[SpokenSpan] = field(default_factory=list)
    first_audio_at: float | None = None
    transfer_requested: bool = False
    completed: bool = False
    history_entry: Message | None = None
    deadline_scope: asyncio.Timeout | None = None  # armed until the first audio goes out
    # A preemptive reply, started on an interim transcript: its audio is held back until
    # the final confirms it (``kept`` set), or it is cancelled (``discarded``).
    speculative: bool = False
    kept: asyncio.Event = field(default_factory=asyncio.Event)
    discarded: bool = False

    def reply_text(self) -> str:
        return " ".join(span.text for span in self.spans)

    @property
    def heard(self) -> bool:
        """Some of its audio went to the line (queued audio that was dropped does not count)."""
        return any(span.start for span in self.spans)
