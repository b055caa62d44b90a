"""One turn of the conversation, and when a failed one is worth another try."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipeline.playout import SpokenSpan
from pipeline.providers.base import Message, ProviderError

BACKOFF_BASE_S = 0.1  # first retry waits this long, doubling after
MIN_ATTEMPT_S = 0.3  # an attempt with less time than this left cannot beat the deadline


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


def retry_delay(
    exc: ProviderError, attempt: int, *, heard: bool, now: float, end: float
) -> float | None:
    """How long to wait before attempt ``attempt + 1``; None means apologise instead.

    Retrying is only worth it while the caller has heard nothing of the turn (else the
    reply would restart mid-sentence), for a fault that may pass, and with enough of the
    turn deadline ``end`` left for another attempt to produce audio. A server that asked
    for a longer wait (``Retry-After``) gets it; when that cannot fit, apologise at once.
    """
    if heard or not exc.retryable:
        return None
    delay = BACKOFF_BASE_S * 2.0 ** (attempt - 1)
    if exc.retry_after_s is not None:
        delay = max(delay, exc.retry_after_s)
    if now + delay + MIN_ATTEMPT_S > end:
        return None
    return delay
