"""Per-address limits on ``/voice`` handshakes, and a throttle for the lines they log.

Pure and clock-driven (every method takes ``now``), so each rule is tested on virtual
time. :mod:`server.voice` applies them before a WebSocket is accepted:

- **handshake rate**: a token bucket per address (``rate`` per second, ``burst`` at once);
- **strikes**: a second bucket per address, drained by each wrong token, address outside
  the allow-list, or stream closed for sending nothing (no Stream Node does that); when
  it runs dry the address is banned for ``ban_s``;
- **pending connections**: accepted streams that have not sent their first frame yet
  (idle sockets that never send metadata) are capped per address.

Addresses inside ``exempt`` (the allow-list: your Stream Node's egress ranges) are never
limited. Memory is bounded: at most ``max_tracked`` addresses are remembered, the least
recently seen idle ones are forgotten first.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from server.security import Network

__all__ = ["IpLimitConfig", "IpLimits", "LogThrottle", "PendingPool", "TokenBucket", "Verdict"]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; starts full."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if there are that many; False (and take none) if not."""
        self.refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.capacity

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` tokens are there."""
        self.refill(now)
        missing = amount - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate


@dataclass(frozen=True, slots=True)
class IpLimitConfig:
    handshakes_per_s: float = 20.0
    handshake_burst: int = 100
    max_pending: int = 32
    auth_failures: int = 20  # strikes an address may have...
    auth_window_s: float = 60.0  # ...per this long, before it is banned
    ban_s: float = 300.0
    max_tracked: int = 10_000
    exempt: Sequence[Network] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """A refusal: HTTP status (429), what to log, and the Retry-After in seconds."""

    kind: Literal["banned", "rate", "pending"]
    reason: str
    retry_after_s: int


@dataclass(slots=True)
class _Address:
    handshakes: TokenBucket
    refusals: TokenBucket
    banned_until: float = 0.0
    pending: int = 0


@dataclass
class IpLimits:
    config: IpLimitConfig = field(default_factory=IpLimitConfig)
    _seen: OrderedDict[str, _Address] = field(default_factory=OrderedDict)
    bans: int = 0  # addresses banned so far (for logs and tests)

    def exempt(self, ip: str | None) -> bool:
        if ip is None or not self.config.exempt:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.config.exempt)

    def check_handshake(self, ip: str | None, now: float) -> Verdict | None:
        """Count one handshake from ``ip``; a Verdict if it must be refused now."""
        if self.exempt(ip):
            return None
        state = self._state(ip, now)
        if state.banned_until > now:
            wait = state.banned_until - now
            return Verdict("banned", "address banned after repeated refusals", _ceil(wait))
        if not state.handshakes.take(1, now):
            wait = state.handshakes.wait_s(1, now)
            rate = self.config.handshakes_per_s
            return Verdict("rate", f"more than {rate:g} handshakes/s from one address", _ceil(wait))
        if state.pending >= self.config.max_pending:
            return Verdict(
                "pending",
                f"{state.pending} streams from this address have not sent metadata yet",
                5,
            )
        return None

    def strike(self, ip: str | None, now: float) -> bool:
        """Record a refused authentication or a silent stream; True if it starts a ban."""
        if self.exempt(ip):
            return False
        state = self._state(ip, now)
        if state.refusals.take(1, now) or state.banned_until > now:
            return False
        state.banned_until = now + self.config.ban_s
        state.refusals.tokens = state.refusals.capacity  # the ban is the penalty; start over
        self.bans += 1
        return True

    def hold(self, ip: str | None, now: float) -> None:
        """A stream from ``ip`` was accepted and has sent nothing yet."""
        if not self.exempt(ip):
            self._state(ip, now).pending += 1

    def release(self, ip: str | None) -> None:
        """That stream sent its first frame, or ended."""
        state = self._seen.get(_key(ip))
        if state is not None and state.pending > 0:
            state.pending -= 1

    def pending(self, ip: str | None) -> int:
        state = self._seen.get(_key(ip))
        return 0 if state is None else state.pending

    def tracked(self) -> int:
        return len(self._seen)

    def _state(self, ip: str | None, now: float) -> _Address:
        key = _key(ip)
        state = self._seen.get(key)
        if state is not None:
            self._seen.move_to_end(key)
            return state
        if len(self._seen) >= self.config.max_tracked:
            self._forget(now)
        cfg = self.config
        state = _Address(
            handshakes=TokenBucket(cfg.handshakes_per_s, cfg.handshake_burst, now),
            refusals=TokenBucket(cfg.auth_failures / cfg.auth_window_s, cfg.auth_failures, now),
        )
        self._seen[key] = state
        return state

    def _forget(self, now: float) -> None:
        """Make room: drop idle addresses (oldest first); failing that, the oldest one."""
        for key in list(self._seen):
            state = self._seen[key]
            if (
                state.pending == 0
                and state.banned_until <= now
                and state.handshakes.full(now)
                and state.refusals.full(now)
            ):
                del self._seen[key]
                if len(self._seen) < self.config.max_tracked * 0.9:
                    return
        while len(self._seen) >= self.config.max_tracked:
            self._seen.popitem(last=False)


class PendingPool:
    """Accepted streams that have not sent a frame yet, at most ``capacity`` at once.

    A full pool makes room by evicting a stream (its event is set; the stream closes
    itself): the oldest one of the address with the most streams waiting. A Stream Node
    sends metadata within milliseconds of its handshake, so it rarely has even one stream
    waiting, while an address flooding idle sockets has many: idle sockets from however
    many addresses hold at most ``capacity`` places, and never keep a real call out.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.evictions = 0
        self._by_address: dict[str, OrderedDict[asyncio.Event, None]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def enter(self, ip: str | None) -> asyncio.Event:
        """Join the pool; the returned event is set if this stream is evicted."""
        while self._count >= self.capacity:
            self._evict()
        evicted = asyncio.Event()
        self._by_address.setdefault(_key(ip), OrderedDict())[evicted] = None
        self._count += 1
        return evicted

    def leave(self, ip: str | None, evicted: asyncio.Event) -> None:
        waiting = self._by_address.get(_key(ip))
        if waiting is None or evicted not in waiting:
            return  # evicted already, or left before
        del waiting[evicted]
        self._count -= 1
        if not waiting:
            del self._by_address[_key(ip)]

    def _evict(self) -> None:
        key = max(self._by_address, key=lambda k: len(self._by_address[k]))
        waiting = self._by_address[key]
        oldest, _ = waiting.popitem(last=False)
        if not waiting:
            del self._by_address[key]
        self._count -= 1
        oldest.set()
        self.evictions += 1


def _key(ip: str | None) -> str:
    return ip or "unknown"


def _ceil(seconds: float) -> int:
    return max(1, int(seconds) + (seconds > int(seconds)))


class LogThrottle:
    """At most one line per key per ``window_s``, and ``max_lines`` lines per window in all.

    ``allow`` answers whether to log now and how many lines were held back before it (for
    the key, and across keys while the global budget was spent), so the next line that is
    logged can say "+N similar". Keys are bounded like addresses above.
    """

    def __init__(self, window_s: float = 60.0, max_lines: int = 20, max_keys: int = 1000) -> None:
        self.window_s = window_s
        self.max_lines = max_lines
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (at, held)
        self._window_start = float("-inf")
        self._lines = 0
        self._held_globally = 0

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        if now - self._window_start >= self.window_s:
            self._window_start, self._lines = now, 0
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return False, 0
        if self._lines >= self.max_lines:
            self._held_globally += 1
            return False, 0
        held = (last[1] if last is not None else 0) + self._held_globally
        self._held_globally = 0
        self._lines += 1
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True, held
