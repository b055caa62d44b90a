"""What every HTTP fake shares: its app on one loopback socket, its records, and waiting."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request

from testkit._service import Service
from testkit._waiting import Changes
from testkit.http import AppServer

R = TypeVar("R")
IDLE_KEEP_ALIVE_S = 60


class HttpFake(Service, Generic[R]):
    """Base of the OpenAI and Cartesia fakes. ``async with`` starts and stops the server."""

    def __init__(
        self, app: Starlette, *, max_records: int, host: str, port: int, websockets: bool = False
    ) -> None:
        self.app = app
        self.requests: deque[R] = deque(maxlen=max_records)
        # Idle keep-alive connections live 60 s, as behind the providers' load balancers
        # (uvicorn's own default, 5 s, would close them before any client pool does).
        self._server = AppServer(
            app,
            host=host,
            port=port,
            ws="websockets-sansio" if websockets else "none",
            keep_alive_s=IDLE_KEEP_ALIVE_S,
        )
        self._ids = itertools.count(1)
        self._changes = Changes()
        self._closing = asyncio.Event()
        self._peers: set[tuple[str, int]] = set()  # client (host, port) of every request
        self.connections_opened = 0  # distinct client connections seen (keep-alive re-use)

    def note_connection(self, request: Request) -> bool:
        """Whether ``request`` came on a connection this fake has not seen before."""
        client = request.client
        peer = (client.host, client.port) if client is not None else ("", 0)
        if peer in self._peers:
            return False
        self._peers.add(peer)
        self.connections_opened += 1
        return True

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self) -> None:
        self._closing = asyncio.Event()
        await self._server.start()

    async def stop(self) -> None:
        self._closing.set()  # releases stalled streams so the server can drain
        await self._server.stop()

    async def wait_for_requests(self, n: int, timeout_s: float = 5.0) -> list[R]:
        """The first ``n`` requests (counting from the oldest kept), once they exist."""
        return await self._changes.wait_for(
            lambda: list(self.requests)[:n] if len(self.requests) >= n else None, timeout_s
        )

    async def wait_until(self, probe: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        """Re-check ``probe`` on every change; return its first value that is not None/False."""
        return await self._changes.wait_for(lambda: probe() or None, timeout_s)
