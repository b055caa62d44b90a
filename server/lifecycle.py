"""Admission of calls and graceful shutdown (drain).

``LiveCalls`` counts open ``/voice`` calls (for ``MAX_CALLS``) and holds the
session of each call that got as far as one. ``Lifecycle`` owns the drain: on SIGTERM it
turns ``/ready`` to 503 and refuses new calls at once, lets the calls in progress finish
for up to ``DRAIN_SECONDS``, then says the goodbye line and ``disconnect`` to the rest,
and only then lets uvicorn shut down.

Why a signal hook and not the lifespan shutdown: uvicorn closes every WebSocket with 1012
*before* it runs the lifespan shutdown, so by then there is no call left to drain.
``Lifecycle.install_signal_handlers`` chains in front of uvicorn's own handler, which works
for both ``voice-agent serve`` and ``uvicorn server:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import uvicorn

from config.logs import call_id_var, get_logger
from pipeline.events import EndReason

__all__ = ["DRAIN_REASON", "CallEnder", "Lifecycle", "LiveCalls"]

log = get_logger("SERVER")

DRAIN_REASON = "server shutting down"
GOODBYE_LIMIT_S = 15.0  # the goodbye line plus disconnect, for every remaining call at once
HANG_UP_GRACE_S = 3.0  # after disconnect, time for the Stream Node to close its side
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SignalHandler = Callable[[int, FrameType | None], Any]


class CallEnder(Protocol):
    """What the drain needs of a call: :meth:`pipeline.call.session.CallSession.end_call`."""

    async def end_call(self, reason: str, *, kind: EndReason = "timeout") -> None: ...


@dataclass(slots=True)
class LiveCalls:
    """Open ``/voice`` calls; a connection is counted from its first frame on (until then
    it is pending: :class:`server.admission.PendingStream`)."""

    connections: int = 0
    # session -> call id; keyed by the session, as two connections may claim one call id.
    sessions: dict[CallEnder, str] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def try_admit(self, limit: int) -> bool:
        """Reserve a slot (no await between the check and the count: no race)."""
        if self.connections >= limit:
            return False
        self.connections += 1
        return True

    def release(self) -> None:
        self.connections -= 1
        self._notify()

    @contextlib.contextmanager
    def session(self, call_id: str, session: CallEnder) -> Iterator[None]:
        """Make a running call reachable by the drain for as long as it runs."""
        self.sessions[session] = call_id
        try:
            yield
        finally:
            del self.sessions[session]
            self._notify()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no connection is open; False if some still are after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.connections > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    def _notify(self) -> None:
        self._changed.set()


class Lifecycle:
    """Readiness and the drain; ``begin_drain`` is what SIGTERM triggers."""

    def __init__(self) -> None:
        self.calls = LiveCalls()
        self.draining = False
        self.drained = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._previous: dict[int, SignalHandler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = False

    def begin_drain(self, drain_s: float, then: Callable[[], None] | None = None) -> None:
        """Stop taking calls now; drain in the background, then call ``then`` (once)."""
        if self._drain_task is not None:
            return
        self.draining = True  # /ready answers 503 from this moment
        self._drain_task = asyncio.create_task(self._drain(drain_s, then), name="drain")

    async def _drain(self, drain_s: float, then: Callable[[], None] | None) -> None:
        calls = self.calls
        try:
            log.info(
                "Draining: refusing new calls; %d in progress get up to %.1f s to finish",
                calls.connections,
                drain_s,
            )
            if not await calls.wait_idle(drain_s):
                await self._end_remaining()
                if not await calls.wait_idle(HANG_UP_GRACE_S):
                    log.warning(
                        "%d connections still open; uvicorn closes them (1012)", calls.connections
                    )
            log.info("Drain complete")
        finally:
            self.drained.set()
            if then is not None:
                then()

    async def _end_remaining(self) -> None:
        sessions = dict(self.calls.sessions)
        log.info("Drain time is up: ending %d calls with the goodbye line", len(sessions))
        tasks = [
            asyncio.create_task(_end_one(call_id, session), name=f"end:{call_id}")
            for session, call_id in sessions.items()
        ]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=GOODBYE_LIMIT_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("%d goodbyes did not finish in %.0f s", len(pending), GOODBYE_LIMIT_S)
        for task in done:
            # Cancelled means the caller hung up during the goodbye: nothing to report.
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("Goodbye failed (%s): %r", task.get_name(), exc)

    async def aclose(self) -> None:
        """Lifespan shutdown: readiness off, our signal hooks out, the drain task ended."""
        self.draining = True
        self.restore_signal_handlers()
        task, self._drain_task = self._drain_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    # -- signals --------------------------------------------------------------------------

    def install_signal_handlers(self, drain_s: float) -> bool:
        """Put the drain in front of uvicorn's SIGTERM/SIGINT handling, if uvicorn has it.

        Only when uvicorn's own ``Server.handle_exit`` is installed (the main thread of a
        ``uvicorn`` or ``voice-agent serve`` process): an embedding process (tests, other
        servers) keeps its signals. A second signal skips the rest of the drain.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        if not all(_is_uvicorn_handler(handler) for handler in previous.values()):
            return False
        self._loop = asyncio.get_running_loop()
        for sig, handler in previous.items():
            assert callable(handler)
            self._previous[sig] = handler
            signal.signal(sig, self._make_handler(drain_s))
        return True

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _make_handler(self, drain_s: float) -> SignalHandler:
        def on_signal(sig: int, frame: FrameType | None) -> None:
            # Runs between two bytecodes of the main thread: only schedule work here.
            loop = self._loop
            if loop is None or self._signalled:
                self._forward(sig, frame)  # a second signal: shut down now
                return
            self._signalled = True
            loop.call_soon_threadsafe(self.begin_drain, drain_s, lambda: self._exit(sig))

        return on_signal

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        handler = self._previous.get(sig)
        if handler is not None:
            handler(sig, frame)

    def _exit(self, sig: int) -> None:
        """After a drain: uvicorn shuts down, and a drained SIGTERM exits with status 0.

        Uvicorn re-raises the signal it caught once it has shut down, so the process would
        die of SIGTERM (status 143); after a completed drain that is no failure.
        """
        self._forward(sig, None)
        server = getattr(self._previous.get(sig), "__self__", None)
        captured = getattr(server, "_captured_signals", None)
        if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
            captured.remove(sig)


def _is_uvicorn_handler(handler: object) -> bool:
    return isinstance(getattr(handler, "__self__", None), uvicorn.Server)


async def _end_one(call_id: str, session: CallEnder) -> None:
    call_id_var.set(call_id)  # this task's own context: the goodbye logs under the call
    await session.end_call(DRAIN_REASON, kind="agent_disconnect")
