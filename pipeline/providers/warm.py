"""Keep-alive connections opened before they are needed, and kept open between turns.

A turn's first LLM request and first TTS request would otherwise pay for TCP (and TLS)
set-up: at start-up (the first call) and after every pause longer than the HTTP pool's
idle limit. Each provider that talks HTTP offers ``warm(n)``: ``n`` concurrent cheap
requests, so ``n`` connections are open in its pool afterwards. Any HTTP answer counts,
even an error status: what is warmed is the connection, not the endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

from config.logs import get_logger

log = get_logger("SERVER")


@runtime_checkable
class Warmable(Protocol):
    name: str

    async def warm(self, connections: int) -> int:
        """Open (or re-use) ``connections`` keep-alive connections; how many answered."""


async def warm_together(connections: int, probe: Callable[[], Awaitable[bool]]) -> int:
    """Run ``connections`` probes at once (so each holds its own connection)."""
    results = await asyncio.gather(*(probe() for _ in range(connections)))
    return sum(results)


async def warm_providers(providers: Iterable[object], connections: int) -> dict[str, int]:
    """Warm every provider that can be warmed; {name: connections that answered}."""
    targets = [p for p in providers if isinstance(p, Warmable)]
    counts = await asyncio.gather(*(p.warm(connections) for p in targets))
    return {p.name: n for p, n in zip(targets, counts, strict=True)}


async def keep_warm(
    providers: Iterable[object],
    connections: int,
    interval_s: float,
    on_first: Callable[[], None] | None = None,
) -> None:
    """Warm now, then every ``interval_s`` (a background task of the server)."""
    targets = list(providers)
    first = True
    while True:
        try:
            counts = await warm_providers(targets, connections)
        finally:
            if first and on_first is not None:
                on_first()  # ready either way: a provider that is down must not hold it
        if first:
            log.info("Warm connections | %s", " ".join(f"{k}={v}" for k, v in counts.items()))
            first = False
        elif any(n < connections for n in counts.values()):
            log.warning("Warm-up incomplete | %s", " ".join(f"{k}={v}" for k, v in counts.items()))
        await asyncio.sleep(interval_s)
