"""Keep-alive connections opened before they are needed, and kept open between turns.

A turn's first LLM request and first TTS request would otherwise pay for TCP (and TLS)
set-up: at start-up (the first call) and after every pause longer than the HTTP pool's
idle limit. Each provider that talks HTTP offers ``warm(n)``: ``n`` concurrent cheap
requests, so ``n`` connections are open in its pool afterwards. Any HTTP answer counts,
even an error status: what is warmed is the connection, not the endpoint. Cartesia over
its WebSocket (the default) warms by opening its one socket, or reopening it if it is gone
(it also reopens itself the moment it drops, :mod:`pipeline.providers.cartesia_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

from config.logs import get_logger

log = get_logger("SERVER")


@runtime_checkable
class Warmable(Protocol):
    name: str

    async def warm_connections(self, connections: int) -> int:
        """Open (or re-use) ``connections`` keep-alive connections; how many answered."""


HOLD_LIMIT_S = 2.0  # a probe holds its connection at most this long for the others


async def warm_together(
    connections: int, probe: Callable[[Callable[[], Awaitable[None]]], Awaitable[bool]]
) -> int:
    """Run ``connections`` probes at once, each holding its own connection.

    A probe calls ``hold()`` once its answer's headers are in and before it lets the
    connection go; ``hold`` returns when every probe has either got there or finished.
    Without it a fast answer frees its connection before the next probe starts, and
    the pool re-uses one connection for all of them.
    """
    waiting = 0
    everyone = asyncio.Event()

    def arrive() -> None:
        nonlocal waiting
        waiting += 1
        if waiting >= connections:
            everyone.set()

    async def one() -> bool:
        held = False

        async def hold() -> None:
            nonlocal held
            held = True
            arrive()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HOLD_LIMIT_S):
                    await everyone.wait()

        try:
            return await probe(hold)
        finally:
            if not held:
                arrive()  # failed before its answer: nobody waits for it

    results = await asyncio.gather(*(one() for _ in range(connections)))
    return sum(results)


async def warm_providers(providers: Iterable[object], connections: int) -> dict[str, int]:
    """Warm every provider that can be warmed; {name: connections that answered}."""
    targets = [p for p in providers if isinstance(p, Warmable)]
    counts = await asyncio.gather(*(p.warm_connections(connections) for p in targets))
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
