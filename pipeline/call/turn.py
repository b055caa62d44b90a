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
    llm_first_token_at: float | None = None
    tts_first_audio_at: float | None = None
    failed: bool = False  # ended in the fallback line
    spans: list[SpokenSpan] = field(default_factory=list)
    first_audio_at: float | None = None
    transfer_requested: bool = False
    completed: bool = False
    history_entry: Message | None = None
    deadline_scope: asyncio.Timeout | None = None  # armed until the first audio goes out

    def reply_text(self) -> str:
        return " ".join(span.text for span in self.spans)
