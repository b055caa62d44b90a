"""``voice-agent serve --workers N``: N server processes on one port (SO_REUSEPORT).

One Python process runs on one core, and a call's work stays in the process that
accepted it, so a box with N cores wants N processes. Each worker binds its own socket
to the same address with ``SO_REUSEPORT``: the kernel spreads new connections over the
workers' sockets by a hash of the client address, with no accept lock and no parent in
the data path. Each worker is an ordinary ``uvicorn server:app`` process:

* its share of ``MAX_CALLS`` (its ``MAX_CALLS`` is set to the share before it starts);
* its own provider connections and greeting cache, warmed *before* its socket listens
  (a worker that is not warm gets no connection, rather than answering ``warming``);
* its own ``/health`` and ``/ready`` (both name the worker and its pid), and its own
  SIGTERM drain (:mod:`server.lifecycle`).

The supervisor (this module's :func:`serve_workers`, in the ``voice-agent`` process)
forwards SIGTERM/SIGINT to every worker, so all of them drain at once, and waits for
them; a second signal is forwarded too (the workers skip the rest of their drain). A
worker that dies on its own is started again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from config.logs import get_logger

__all__ = ["WORKER_ENV", "bind_reuseport", "serve_workers", "worker_index", "worker_share"]

log = get_logger("SERVER")

WORKER_ENV = "VOICE_AGENT_WORKER"  # set in each worker: its index (0..N-1)
RESTART_DELAY_S = 1.0
EXIT_GRACE_S = 30.0  # after the drain limit: time for goodbyes and uvicorn's shutdown


def worker_share(max_calls: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of ``max_calls``: the parts add up to it (each at least 1)."""
    base, extra = divmod(max_calls, workers)
    return max(1, base + (1 if index < extra else 0))


def worker_index() -> int | None:
    """This process's worker index, or None when it is not run by :func:`serve_workers`."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other workers may bind too (not listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _worker_main(index: int, env: Mapping[str, str], options: dict[str, Any]) -> None:
    """One worker (a spawned process): its settings, its socket, uvicorn."""
    os.environ.update(env)
    os.environ[WORKER_ENV] = str(index)
    import uvicorn

    sock = bind_reuseport(options.pop("host"), options.pop("port"))
    config = uvicorn.Config("server:app", **options)
    # uvicorn calls listen() on the socket only after the lifespan startup, which waits
    # for this worker's warm-up: until then the kernel sends connections to the others.
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class _Supervisor:
    count: int
    options: dict[str, Any]
    max_calls: int
    drain_s: float
    context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    workers: dict[int, BaseProcess] = field(default_factory=dict)
    stopping: bool = False
    signals: int = 0

    def start(self, index: int) -> None:
        env = {"MAX_CALLS": str(worker_share(self.max_calls, self.count, index))}
        proc = self.context.Process(
            target=_worker_main,
            args=(index, env, dict(self.options)),
            name=f"voice-agent-worker-{index}",
        )
        proc.start()
        self.workers[index] = proc
        log.info("Worker %d started | pid=%s max_calls=%s", index, proc.pid, env["MAX_CALLS"])

    def forward(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only flag and forward (os.kill is async-signal-safe enough).
        self.stopping = True
        self.signals += 1
        for proc in self.workers.values():
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM if sig == signal.SIGTERM else sig)

    def run(self) -> int:
        for index in range(self.count):
            self.start(index)
        stop_deadline: float | None = None
        while True:
            alive = [p for p in self.workers.values() if p.exitcode is None]
            if self.stopping:
                if not alive:
                    break
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.drain_s + EXIT_GRACE_S
                elif time.monotonic() > stop_deadline:
                    for proc in alive:
                        log.error("Worker pid %s did not stop in time; killing it", proc.pid)
                        proc.kill()
            else:
                for index, proc in list(self.workers.items()):
                    if proc.exitcode is not None:
                        log.error(
                            "Worker %d (pid %s) exited with %s; starting it again",
                            index,
                            proc.pid,
                            proc.exitcode,
                        )
                        time.sleep(RESTART_DELAY_S)
                        if not self.stopping:
                            self.start(index)
            time.sleep(0.1)
        codes = [p.exitcode for p in self.workers.values()]
        log.info("All workers stopped | exit codes %s", codes)
        return 0 if all(code == 0 for code in codes) else 1


def serve_workers(count: int, options: dict[str, Any], *, max_calls: int, drain_s: float) -> int:
    """Run ``count`` uvicorn workers of ``server:app`` on ``options['host']:['port']``."""
    # Bind once here: a port taken by another program fails now, with a clear message.
    try:
        probe = bind_reuseport(options["host"], options["port"])
    except OSError as exc:
        print(f"error: cannot bind {options['host']}:{options['port']}: {exc}", file=sys.stderr)
        return 1
    options = {**options, "port": probe.getsockname()[1]}
    supervisor = _Supervisor(count, options, max_calls, drain_s)
    previous = {
        sig: signal.signal(sig, supervisor.forward) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    log.info(
        "Serving on %s:%s with %d workers (SO_REUSEPORT), MAX_CALLS %d split between them",
        options["host"],
        options["port"],
        count,
        max_calls,
    )
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        probe.close()
