"""The process's sockets to Cartesia's ``/tts/websocket``, shared by all its voices.

One socket per process (a small pool: another opens when one carries
``contexts_per_socket`` contexts), opened at start-up and kept open. A socket that goes
away when nobody closed it (Cartesia's idle close after 5 minutes, a network drop, a
restart on their side) is reopened at once in the background, backing off per
:data:`REOPEN`, so the next turn finds one open instead of paying for the handshake. A
refusal that retrying cannot fix (401, 403) stops the reopening: the next turn tries
again, fails the same way and the caller hears the apology.

Each socket has one reader task that routes messages to their context's queue by
``context_id``; when the socket closes, every context still on it gets a ``closed``
message (the turn retries or apologises, see :mod:`pipeline.call.reply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from config.logs import get_logger
from pipeline.providers.base import ProviderError, ProviderTimeout, status_error
from pipeline.retry import RetryPolicy

log = get_logger("CARTESIA")

_PROVIDER = "cartesia"
CLOSED = "closed"  # internal message type: the socket went away
_PING_S = 20.0
_CLOSE_TIMEOUT_S = 1.0  # the closing handshake at shutdown: never hold the drain for long
# Reopening a dropped socket: 0.2 s doubling to 10 s, jittered (every process of a fleet
# lost its socket at once when Cartesia restarted), for as long as the process runs.
REOPEN = RetryPolicy(base_s=0.2, cap_s=10.0, jitter="equal")


class CartesiaSocket:
    """One connection and the task that routes its messages to their contexts."""

    def __init__(
        self, conn: ClientConnection, on_closed: Callable[[CartesiaSocket], None], queue_max: int
    ) -> None:
        self.conn = conn
        self.routes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.closed = False
        self.closing = False  # we closed it: nothing to reopen
        self._on_closed = on_closed
        self._queue_max = queue_max
        self.reader = asyncio.create_task(self._read(), name="cartesia-ws-reader")

    def route(self, context_id: str) -> asyncio.Queue[dict[str, Any]]:
        """The queue that receives ``context_id``'s messages (until :meth:`unroute`)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_max)
        if self.closed:
            queue.put_nowait({"type": CLOSED, "reason": "closed before the context began"})
        self.routes[context_id] = queue
        return queue

    def unroute(self, context_id: str) -> None:
        self.routes.pop(context_id, None)

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.conn.send(json.dumps(message))
        except ConnectionClosed as exc:
            self.closed = True
            raise ProviderError(_PROVIDER, f"socket closed ({exc})", retryable=True) from exc

    async def _read(self) -> None:
        reason, fault = "closed by the server", False
        try:
            async for raw in self.conn:
                message = json.loads(raw)
                context_id = message.get("context_id") if isinstance(message, dict) else None
                if not isinstance(context_id, str) or context_id not in self.routes:
                    continue  # a cancelled or finished context: its late messages are dropped
                queue = self.routes[context_id]
                try:
                    queue.put_nowait(message)
                except asyncio.QueueFull:
                    self.routes.pop(context_id, None)
                    log.error("A context's audio is not being read; dropping the context")
        except ConnectionClosed as exc:
            reason, fault = f"closed ({exc})", True
        except ValueError:
            reason, fault = "sent a message that is not JSON", True
            await self.conn.close(1007, "not JSON")  # a peer we cannot read: let it go
        finally:
            self.closed = True
            for queue in self.routes.values():
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait({"type": CLOSED, "reason": reason})
            if not self.closing:
                (log.warning if fault else log.info)("Socket %s", reason)
                self._on_closed(self)

    async def aclose(self) -> None:
        self.closing = self.closed = True
        with contextlib.suppress(Exception):
            await self.conn.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


class CartesiaSocketPool:
    """The sockets of one process, with the connection settings they are opened with."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        connect_timeout_s: float,
        contexts_per_socket: int,
        queue_max: int,
        reopen: RetryPolicy = REOPEN,
    ) -> None:
        self.url = url
        self._headers = headers
        self.connect_timeout_s = connect_timeout_s
        self.contexts_per_socket = contexts_per_socket
        self._queue_max = queue_max
        self._reopen_policy = reopen
        self._sockets: list[CartesiaSocket] = []
        self._connecting: asyncio.Lock | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._closed = False
        self.opened = 0  # sockets opened since start (reopens included)

    @property
    def open_sockets(self) -> int:
        return sum(1 for s in self._sockets if not s.closed)

    def status(self) -> dict[str, Any]:
        """For /health: how many sockets are open, and how many were opened in all."""
        reopening = self._reopening is not None and not self._reopening.done()
        return {"open_sockets": self.open_sockets, "opened": self.opened, "reopening": reopening}

    def _least_busy(self) -> CartesiaSocket | None:
        self._sockets = [s for s in self._sockets if not s.closed]
        best = min(self._sockets, key=lambda s: len(s.routes), default=None)
        if best is not None and len(best.routes) < self.contexts_per_socket:
            return best
        return None

    async def ensure_open(self) -> None:
        """At least one socket open (the warm-up, the reopening): a busy pool grows
        only when a context needs the room."""
        if not self.open_sockets:
            await self.acquire()

    async def acquire(self) -> CartesiaSocket:
        """The least busy open socket, or a new one when all are full (or none is open)."""
        self._check_open()
        best = self._least_busy()
        if best is not None:
            return best
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connect at a time: a burst of turns shares it
            best = self._least_busy()
            if best is not None:
                return best
            socket = await self._connect()
            if self._closed:  # shut down while connecting
                await socket.aclose()
            self._check_open()
            self._sockets.append(socket)
            return socket

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError(_PROVIDER, "the server is shutting down", retryable=False)

    async def _connect(self) -> CartesiaSocket:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                conn = await connect(
                    self.url,
                    additional_headers=self._headers,
                    open_timeout=None,
                    close_timeout=_CLOSE_TIMEOUT_S,
                    ping_interval=_PING_S,  # a dead connection is noticed, and reopened
                    ping_timeout=_PING_S,
                    max_size=2**22,
                    compression=None,
                )
        except TimeoutError as exc:
            raise ProviderTimeout(_PROVIDER, "connect", self.connect_timeout_s) from exc
        except InvalidStatus as exc:
            response = exc.response
            body = response.body.decode("utf-8", "replace")[:200] if response.body else ""
            raise status_error(
                _PROVIDER, response.status_code, body or "handshake refused", response.headers
            ) from exc
        except (OSError, WebSocketException) as exc:
            raise ProviderError(_PROVIDER, f"cannot connect: {exc!r}", retryable=True) from exc
        self.opened += 1
        log.info(
            "Socket open | sockets=%d connect_ms=%.0f",
            self.open_sockets + 1,
            (time.monotonic() - started) * 1000,
        )
        return CartesiaSocket(conn, self._socket_closed, self._queue_max)

    def _socket_closed(self, socket: CartesiaSocket) -> None:
        """A socket we did not close went away: reopen one if none is left."""
        if self._closed or self.open_sockets:
            return
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.create_task(self._reopen(), name="cartesia-ws-reopen")

    async def _reopen(self) -> None:
        failures = 0
        while not self._closed:
            try:
                await self.ensure_open()
                log.info("Socket reopened")
                return
            except ProviderError as exc:
                failures += 1
                delay = self._reopen_policy.delay(failures, retry_after_s=exc.retry_after_s)
                if not exc.retryable or delay is None:
                    log.error("Cannot reopen the socket (%s); the next turn tries again", exc)
                    return
                if failures == 1 or failures % 10 == 0:  # an outage: a line now and then
                    log.warning(
                        "Cannot reopen the socket (%s; %d tries); again in %.1f s",
                        exc,
                        failures,
                        delay,
                    )
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Stop reopening, close every socket and wait for their readers."""
        self._closed = True
        reopening, self._reopening = self._reopening, None
        if reopening is not None:
            reopening.cancel()
            await asyncio.gather(reopening, return_exceptions=True)
        sockets, self._sockets = self._sockets, []
        for socket in sockets:
            await socket.aclose()
