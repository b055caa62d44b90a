"""Run an ASGI app in-process on a loopback socket with uvicorn, for tests and benchmarks.

The socket is bound before uvicorn starts, so the port is known at once (``port=0`` picks
a free one) and there is no bind race. Uvicorn's signal capture, lifespan, access log and
logging configuration are all disabled: the embedding process owns those.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from testkit._service import Service

__all__ = ["AppServer", "bind_loopback"]

_START_POLL_S = 0.005


def bind_loopback(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (port 0 = any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone and stops at once
    when asked (uvicorn's own loop polls every 100 ms)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers
        await self.exit_requested.wait()


class AppServer(Service):
    """One ASGI app served on one loopback socket; ``async with`` starts and stops it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_shutdown_s: int = 2,
        lifespan: Literal["auto", "on", "off"] = "off",
        ws: Literal["auto", "none", "websockets", "websockets-sansio", "wsproto"] = "none",
        keep_alive_s: int = 5,
    ) -> None:
        self._app = app
        self._lifespan: Literal["auto", "on", "off"] = lifespan
        self._ws: Literal["auto", "none", "websockets", "websockets-sansio", "wsproto"] = ws
        self._host = host
        self._requested_port = port
        self._graceful_shutdown_s = graceful_shutdown_s
        self._keep_alive_s = keep_alive_s
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("server already started")
        sock = bind_loopback(self._host, self._requested_port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan=self._lifespan,
            access_log=False,
            log_config=None,
            log_level="warning",
            ws=self._ws,
            timeout_graceful_shutdown=self._graceful_shutdown_s,
            timeout_keep_alive=self._keep_alive_s,
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{self._port}")
        try:
            while not server.started:
                if self._task.done():
                    self._task.result()  # surfaces the startup error
                    raise RuntimeError("uvicorn exited during startup")
                await asyncio.sleep(_START_POLL_S)
        except BaseException:
            await self.stop()
            sock.close()
            raise

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        server.exit_requested.set()
        try:
            await task
        except SystemExit as exc:  # uvicorn exits this way when startup fails
            raise RuntimeError(f"uvicorn failed on port {self._port}") from exc
