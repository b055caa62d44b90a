"""Call events across ``voice-agent serve --workers N``: each worker answers its siblings.

With several workers on one port the kernel hands each new connection to any of them, so
the playground's ``/voice`` stream and its ``/calls/{id}/events`` feed (two connections)
usually land on different processes, and ``GET /calls`` sees one worker's calls. So each
worker also listens on a Unix socket, ``<tmp>/voice-agent-<supervisor pid>/worker-<i>.sock``
(the directory is the user's own, mode 0700), and answers three questions about the calls
its hub holds, in JSON lines: ``recent`` (history rows), ``detail`` (one call's events) and
``feed`` (a call's events, replayed then live, ending after ``call_ended``). A worker that
does not hold a call asks the others. A single process (no ``--workers``) has no relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from config.logs import get_logger
from pipeline.aio import cancel_and_wait
from pipeline.events import CallEnded, CallEventHub, event_to_dict
from server.call_history import CallDetail, CallSummary, HubHistory

__all__ = ["WorkerRelay", "relay_dir"]

log = get_logger("PLAYGROUND")

ASK_TIMEOUT_S = 2.0  # a sibling that does not answer in this long is skipped
LINE_LIMIT = 4 * 1024 * 1024  # one JSON line (a call's whole detail)


def relay_dir(supervisor_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"voice-agent-{supervisor_pid}"


def _private_dir(path: Path) -> bool:
    """Create ``path`` for this user only; False if it exists and is not ours alone."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and stat.S_IMODE(info.st_mode) & 0o077 == 0
    )


class WorkerRelay:
    """This worker's Unix-socket answerer, and the client that asks its siblings.

    It is also the history reader (:class:`server.call_history.CallHistory`) of a worker:
    its own calls and its siblings', newest first.
    """

    name = "memory"

    def __init__(self, hub: CallEventHub, directory: Path, index: int) -> None:
        self._hub = hub
        self._local = HubHistory(hub)
        self.directory = directory
        self.path = directory / f"worker-{index}.sock"
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> bool:
        if not _private_dir(self.directory):
            log.error("Not relaying call events: %s is not this user's alone", self.directory)
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a worker that died
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=LINE_LIMIT
        )
        os.chmod(self.path, 0o600)
        return True

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # the last worker out tidies up

    # --- answering -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = json.loads(await asyncio.wait_for(reader.readline(), ASK_TIMEOUT_S))
            op, call_id = request.get("op"), str(request.get("call_id", ""))
            if op == "recent":
                rows = await self._local.recent(int(request.get("limit", 50)))
                await _send(writer, {"calls": [row.to_dict() for row in rows]})
            elif op == "detail":
                detail = await self._local.detail(call_id)
                await _send(writer, {"detail": detail.to_dict() if detail else None})
            elif op == "feed":
                await self._feed(reader, writer, call_id)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the asker went away or spoke nonsense: nothing to tell
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _feed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call_id: str
    ) -> None:
        if not self._hub.known(call_id):
            await _send(writer, {"known": False})
            return
        await _send(writer, {"known": True})
        pump = asyncio.create_task(self._pump(writer, call_id), name="call-feed-relay")
        gone = asyncio.create_task(reader.read(), name="call-feed-relay-watch")  # EOF: asker left
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(pump)
            await cancel_and_wait(gone)

    async def _pump(self, writer: asyncio.StreamWriter, call_id: str) -> None:
        feed = self._hub.subscribe(call_id)
        try:
            async for event in feed:
                await _send(writer, event_to_dict(event))
                if isinstance(event, CallEnded):
                    return
        finally:
            await feed.aclose()

    # --- asking ----------------------------------------------------------------------

    def _siblings(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.glob("worker-*.sock") if p != self.path)
        except OSError:
            return []

    async def recent(self, limit: int) -> list[CallSummary]:
        """Every worker's recent calls, newest first."""
        rows = await self._local.recent(limit)
        for answer in await asyncio.gather(
            *(_ask(p, {"op": "recent", "limit": limit}) for p in self._siblings())
        ):
            rows += [CallSummary(**row) for row in (answer or {}).get("calls", [])]
        rows.sort(key=lambda row: row.started_at or 0.0, reverse=True)
        return rows[:limit]

    async def detail(self, call_id: str) -> CallDetail | None:
        local = await self._local.detail(call_id)
        if local is not None:
            return local
        for path in self._siblings():
            found = ((await _ask(path, {"op": "detail", "call_id": call_id})) or {}).get("detail")
            if found:
                return CallDetail(CallSummary(**found["call"]), found["events"])
        return None

    async def open_feed(self, call_id: str) -> AsyncGenerator[dict[str, Any], None] | None:
        """The events of a call another worker holds, or None if none holds it."""
        for path in self._siblings():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(path), limit=LINE_LIMIT), ASK_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                continue  # a worker that is gone or restarting
            try:
                await _send(writer, {"op": "feed", "call_id": call_id})
                answer = json.loads(await asyncio.wait_for(reader.readline(), ASK_TIMEOUT_S))
            except (OSError, ValueError, TimeoutError):
                answer = {}
            if answer.get("known"):
                return _remote_events(reader, writer)
            writer.close()
        return None


async def _remote_events(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def _ask(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """One question, one JSON line back; None when that worker cannot answer."""
    try:
        async with asyncio.timeout(ASK_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=LINE_LIMIT)
            try:
                await _send(writer, request)
                answer: dict[str, Any] = json.loads(await reader.readline())
                return answer
            finally:
                writer.close()
    except (OSError, ValueError, TimeoutError):
        return None
