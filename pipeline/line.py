"""The caller's phone line, as the call core sees it: the line port.

The call session plays PCM, clears what is queued, transfers the caller or hangs up, and
reads the caller's PCM until the caller hangs up. That is all it knows of a line: JSON
frames, WAV, base64 and how audio is chunked on the wire belong to each line's adapter
(the Knowlarity Stream Node: :mod:`server.knowlarity_line`; a browser page or a Twilio,
Exotel or Plivo media stream would be others, with no change to the session).

Contract for adapters:

- PCM is 16-bit little-endian mono at ``sample_rate``, in both directions.
- ``play`` queues audio behind what is queued; the line plays it back to back, so the
  session can keep the caller's playback clock (:mod:`pipeline.playout`). The session
  sends pieces of ``chunk_ms`` (the last piece of a line may be shorter); each ``play``
  is one unit on the wire.
- ``clear`` stops what is playing now and drops what is queued (barge-in).
- ``transfer`` / ``hang_up`` hand the line back; nothing is played after them.
- ``audio()`` yields the caller's PCM in whole samples and ends when the caller hangs
  up (the hang-up signal); after that, ``play`` and the controls are dropped quietly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class LinePort(Protocol):
    @property
    def sample_rate(self) -> int:
        """The line's PCM rate (Hz), both directions."""

    @property
    def chunk_ms(self) -> int:
        """How much audio each ``play`` should carry."""

    def audio(self) -> AsyncIterator[bytes]:
        """The caller's PCM until the caller hangs up (then the iterator ends)."""

    async def play(self, pcm: bytes) -> None:
        """Queue ``pcm`` for the caller, after everything already queued."""

    async def clear(self) -> None:
        """Stop the caller's playback now and drop queued audio."""

    async def transfer(self, number: str) -> None:
        """Hand the caller to ``number`` (a person); the call is then no longer ours."""

    async def hang_up(self) -> None:
        """End the call from our side."""
