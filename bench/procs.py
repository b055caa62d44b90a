"""Start and always stop the fakes, server and callers processes (by their own pid)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Latencies:
    """The providers' scripted latencies (the issue's defaults)."""

    llm_first_token_ms: float = 200.0
    llm_per_token_ms: float = 30.0
    tts_first_audio_ms: float = 150.0
    tts_realtime_factor: float = 4.0
    stt_endpointing_ms: int = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def managed(
    argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose stdout/stderr go to ``log``; stopped on exit, whatever happens."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            _stop(proc)


@contextlib.contextmanager
def fakes(lat: Latencies, log: Path, max_records: int) -> Iterator[tuple[int, dict[str, str]]]:
    """``python -m testkit serve`` with the scripted latencies; yields (pid, env)."""
    argv = [
        PYTHON,
        "-m",
        "testkit",
        "serve",
        "--llm-first-token-ms",
        str(lat.llm_first_token_ms),
        "--llm-per-token-ms",
        str(lat.llm_per_token_ms),
        "--tts-first-audio-ms",
        str(lat.tts_first_audio_ms),
        "--tts-realtime-factor",
        str(lat.tts_realtime_factor),
        "--stt-endpointing-ms",
        str(lat.stt_endpointing_ms),
        "--max-records",
        str(max_records),
    ]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=log.open("wb")
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fakes exited early; see {log}")
        yield proc.pid, json.loads(line)
    finally:
        _stop(proc, signal.SIGTERM)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def server(
    env: Mapping[str, str],
    log: Path,
    port: int,
    fast_loop: bool,
    root: Path = ROOT,
    workers: int = 1,
) -> Iterator[subprocess.Popen[bytes]]:
    """The real server, as users run it: ``uvicorn server:app`` (one process), or
    ``voice-agent serve --workers N`` (N worker processes under a supervisor).

    ``root`` is the source tree it imports from (its working directory comes first on
    ``sys.path``): point it at a patched copy to measure a change before it lands.
    """
    if workers > 1:
        serve = [PYTHON, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        with managed([*serve, "--workers", str(workers)], {**os.environ, **env}, log, root) as p:
            yield p
        return
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        "server:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--ws",
        "websockets-sansio",
    ]
    argv += ["--loop", "uvloop", "--http", "httptools"] if fast_loop else ["--loop", "asyncio"]
    with managed(argv, {**os.environ, **env}, log, cwd=root) as proc:
        yield proc


def wait_healthy(port: int, timeout_s: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
            if r.status_code == 200:
                body: dict[str, object] = r.json()
                return body
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} not healthy after {timeout_s} s")
        time.sleep(0.02)
