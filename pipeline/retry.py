"""Where retries happen: one backoff policy, and one "next item in time" helper.

Every retry in the project is a :class:`RetryPolicy`: the turn's provider retries
(:mod:`pipeline.call.reply`), the Deepgram reconnect loop, the LLM failover's cool-down,
the Knowlarity API's request retries and the konnect stream's reconnects. Each user keeps
its own *decision* of what is worth retrying (a phone call is never placed twice, a turn
never restarts once heard); the policy only says how long to wait, and when to stop.

Every streamed provider read is timed by a :class:`PhaseClock`: a first-result deadline
(first token, first audio), then an idle-gap limit from the last useful item, each expiry
a :class:`~pipeline.providers.base.ProviderTimeout` naming its phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from pipeline.providers.base import ProviderTimeout

T = TypeVar("T")

Jitter = Literal["none", "equal", "full"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with optional jitter, a deadline and ``Retry-After``.

    ``attempt`` counts failures so far (1 = the wait after the first failure). The wait
    before a retry is ``base_s * 2 ** (attempt - 1)``, capped at ``cap_s``, then jittered:
    ``equal`` draws from [half, all] of it, ``full`` from [0, all]. A server that asked for
    a longer wait (``Retry-After``) gets it when ``honour_retry_after``. With a deadline, a
    retry is given up when its wait plus ``min_attempt_s`` (the least time an attempt needs
    to be of any use) would pass the deadline.
    """

    base_s: float
    cap_s: float = float("inf")
    jitter: Jitter = "none"
    honour_retry_after: bool = True
    min_attempt_s: float = 0.0
    max_attempts: int | None = None  # failures after which to stop (None: no limit)

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered wait after failure number ``attempt`` (>= 1)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 1) - 1, 62))
        if self.jitter == "equal":
            return ceiling / 2 + rand() * ceiling / 2
        if self.jitter == "full":
            return rand() * ceiling
        return ceiling

    def delay(
        self,
        attempt: int,
        *,
        retry_after_s: float | None = None,
        now: float = 0.0,
        deadline: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """How long to wait before the next attempt; None means stop retrying."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        wait = self.backoff(attempt, rand)
        if self.honour_retry_after and retry_after_s is not None:
            wait = max(wait, retry_after_s)
        if deadline is not None and now + wait + self.min_attempt_s > deadline:
            return None
        return wait


class PhaseClock:
    """Times one streamed provider response: first result, then the gaps between results.

    ``first_phase`` names what the first deadline waits for ("first_token", "first_audio").
    Only the wait for the server is timed, never the consumer: the idle gap after a useful
    item (:meth:`result`: audio, a token) starts when :meth:`next` is called again, so a
    slow consumer never times out its provider. Bytes that are not a result
    (keep-alive comments, role-only chunks) never reset the clock.
    """

    def __init__(self, provider: str, first_phase: str, first_s: float, idle_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.provider = provider
        self.first_phase = first_phase
        self.first_s = first_s
        self.idle_s = idle_s
        self.deadline = self._loop.time() + first_s
        self.waiting_first = True
        self._restart = False  # a result came: the next wait starts a fresh idle gap

    def result(self) -> None:
        """A useful item arrived: from the next wait on, only the idle gap is limited."""
        self.waiting_first = False
        self._restart = True

    def timeout(self, phase: str | None = None) -> ProviderTimeout:
        if phase is not None:
            return ProviderTimeout(self.provider, phase, self.first_s)
        if self.waiting_first:
            return ProviderTimeout(self.provider, self.first_phase, self.first_s)
        return ProviderTimeout(self.provider, "idle", self.idle_s)

    def opening(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Time opening the request (up to the response headers) against the first deadline."""
        return time_limit(
            self.deadline - self._loop.time(), self.provider, "first_byte", self.first_s
        )

    async def next(self, items: AsyncIterator[T]) -> T:
        """The next item before the deadline, else this phase's ProviderTimeout.

        ``StopAsyncIteration`` at the end of the stream passes through.
        """
        if self._restart:
            self._restart = False
            self.deadline = self._loop.time() + self.idle_s
        try:
            async with asyncio.timeout_at(self.deadline):
                return await anext(items)
        except TimeoutError as exc:
            raise self.timeout() from exc


@contextlib.asynccontextmanager
async def time_limit(
    seconds: float, provider: str, phase: str, reported_s: float | None = None
) -> AsyncIterator[None]:
    """Run the block within ``seconds``, else raise ``ProviderTimeout(provider, phase)``.

    ``reported_s`` is the limit named in the error when it differs from what was left.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        limit = seconds if reported_s is None else reported_s
        raise ProviderTimeout(provider, phase, limit) from exc
