"""Ending a call and handing it on: the goodbye, the hand-off, and the limits that end it.

The session decides *that* the call ends (and moves the state to ENDING or HANDING_OFF);
:class:`Ending` plays the last line and hands the line back: ``transfer`` to a person,
or ``disconnect``. :class:`CallLimits` says when a call has run too long or been silent
too long (pure arithmetic on the call's clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.logs import get_logger
from pipeline.call.feed import CallFeed
from pipeline.call.reply import Speaker
from pipeline.call.state import CallState, CallStatus
from pipeline.call.turn import Turn
from pipeline.call_record import CallRecord
from pipeline.playout import Playout
from pipeline.providers.base import ProviderError

log = get_logger("SESSION")

GOODBYE_PLAYOUT_S = 10.0  # the most we wait for the last line to play before hanging up
UNAVAILABLE_PLAYOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class CallLimits:
    """``MAX_CALL_SECONDS`` and ``SILENCE_TIMEOUT_S``.

    ``quiet_since`` is when the call last had a sign of life: caller speech, the end of
    the bot's audio, or now while a reply is being prepared.
    """

    silence_timeout_s: float
    max_call_s: float

    def reached(self, now: float, *, started: float, quiet_since: float) -> str | None:
        """Why the call must end now, or None."""
        if now >= started + self.max_call_s:
            return f"maximum call duration ({self.max_call_s:.0f} s) reached"
        if now >= quiet_since + self.silence_timeout_s:
            return f"no speech for {self.silence_timeout_s:.0f} s"
        return None

    def next_check(self, *, started: float, quiet_since: float) -> float:
        """When a limit could next be reached (if nothing happens meanwhile)."""
        return min(started + self.max_call_s, quiet_since + self.silence_timeout_s)


class Ending:
    """Plays the last line of a call, then transfers or disconnects (once)."""

    def __init__(
        self,
        *,
        status: CallStatus,
        playout: Playout,
        speaker: Speaker | None,
        record: CallRecord,
        transfer_number: str | None,
        feed: CallFeed,
        clock: Callable[[], float],
    ) -> None:
        self._status = status
        self._playout = playout
        self._speaker = speaker  # None when no TTS is configured: nothing can be said
        self._record = record
        self._number = transfer_number
        self._feed = feed
        self._clock = clock

    async def hand_off(self, line: str) -> None:
        """The caller asked for a person (or we can no longer hear them): hand-off line,
        then ``transfer``. Needs a transfer number."""
        number = self._number
        assert number is not None
        if self._status.can(CallState.HANDING_OFF):
            self._status.to(CallState.HANDING_OFF, detail="transferred to a person")
        await self._say(line, "Hand-off line")
        # Let the caller hear the hand-off line before the line is switched.
        await self._playout.wait_played(limit_s=GOODBYE_PLAYOUT_S)
        await self._transfer(number)

    async def goodbye(self, line: str, *, hand_on: bool, playout_s: float) -> None:
        """In ENDING: say ``line``, then hand on to a person (``hand_on`` and a number
        set) or disconnect."""
        await self._say(line, "Last line")
        await self._playout.wait_played(limit_s=playout_s)
        if hand_on and self._number:
            await self._transfer(self._number)
        elif self._status.can(CallState.DISCONNECTED):
            self._status.to(CallState.DISCONNECTED)
            await self._playout.hang_up()

    async def _say(self, line: str, what: str) -> None:
        if self._speaker is None or not line:
            return
        turn = Turn(user_text=None, started=self._clock())
        try:
            await self._speaker.say_line(line, turn)
        except ProviderError as exc:  # not cached and the TTS failed: hand back all the same
            log.error("%s failed: %s", what, exc)
        if turn.spans:
            self._feed.agent_speech(turn, heard=turn.reply_text())

    async def _transfer(self, number: str) -> None:
        if not self._status.can(CallState.TRANSFERRED):
            return
        self._status.to(CallState.TRANSFERRED)
        await self._playout.transfer(number)
        self._record.transferred_to = number
