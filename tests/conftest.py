"""Shared fixtures: the provider fakes and our server, both on loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from fastapi import FastAPI

from config.logs import CallContextFilter
from config.settings import Settings
from server.application import create_app
from server.state import AppState
from testkit import DEFAULT_KEYS, AppServer, FakeProviders
from tests.postgres import Postgres, running_postgres

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Call records of in-process apps: one SQLite file for the run, never the work tree's data/.
_RECORDS_DIR = tempfile.TemporaryDirectory(prefix="voice-records-")


def make_settings(env: dict[str, str], **overrides: Any) -> Settings:
    """Settings from an env-style dict, ignoring any .env file and the real environment."""
    values: dict[str, Any] = {key.lower(): value for key, value in env.items()}
    values.setdefault("data_dir", _RECORDS_DIR.name)
    # A preemptive reply races the fake's final in real time (an extra LLM request when it
    # starts first): tests that script each request turn it on themselves.
    values.setdefault("preemptive_reply", False)
    values.update(overrides)
    return Settings(_env_file=None, **values)


class VoiceServer:
    """Our app served by uvicorn on loopback, lifespan and WebSockets on, as users run it."""

    def __init__(self, app: FastAPI, server: AppServer) -> None:
        self.app = app
        self._server = server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.port}/voice"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.voice
        return state

    async def stop(self) -> None:
        """Shut the server down now (the fixture's own stop is then a no-op)."""
        await self._server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL server for the run (each test makes its own database)."""
    with running_postgres(free_port()) as server:
        yield server


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        yield providers


StartServer = Callable[..., Any]


@pytest.fixture
async def start_server(fakes: FakeProviders) -> AsyncIterator[StartServer]:
    """Call ``await start_server(**setting_overrides)`` to get a running VoiceServer."""
    servers: list[AppServer] = []

    async def start(**overrides: Any) -> VoiceServer:
        app = create_app(make_settings(fakes.env(), **overrides))
        server = AppServer(app, lifespan="on", ws="websockets-sansio")
        await server.start()
        servers.append(server)
        voice = VoiceServer(app, server)
        # Like a load balancer, wait for /ready (the greeting is cached) before calling.
        await asyncio.wait_for(voice.state.greeting_warmed.wait(), 10)
        return voice

    yield start
    for server in reversed(servers):
        await server.stop()


# --- no configured secret in any log line of the whole run ------------------------------

# Every value any app masked during the run (config.logs learns them from settings),
# plus the keys the fakes are started with: none may appear in a captured log line.
_SECRETS: set[str] = {DEFAULT_KEYS["deepgram"], DEFAULT_KEYS["openai"], DEFAULT_KEYS["cartesia"]}
_OUTPUTS: list[str] = []  # output of server processes started by tests


def register_secret(*values: str) -> None:
    """Also scan for these (e.g. a token a test configures outside the app)."""
    _SECRETS.update(v for v in values if len(v) >= 4)


def record_output(text: str) -> None:
    """Scan this text (a server process's log output) at the end of the run as well."""
    _OUTPUTS.append(text)


class _CaptureAll(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the exception trace too, as printed


def find_leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """One description per (secret, line) hit, with the secret itself masked."""
    leaks = []
    for text in texts:
        for line in text.splitlines():
            for secret in secrets:
                if secret in line:
                    shown = line.replace(secret, f"<{secret[:3]}…>")[:300]
                    leaks.append(f"secret <{secret[:3]}…> in: {shown}")
    return leaks


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs() -> Iterator[None]:
    """Capture every log record of the run on the root logger; fail if a secret shows."""
    original = CallContextFilter.set_secrets

    def learn(self: CallContextFilter, secrets: Iterable[str]) -> None:
        values = list(secrets)
        register_secret(*values)
        original(self, values)

    handler = _CaptureAll()
    root = logging.getLogger()
    root.addHandler(handler)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CallContextFilter, "set_secrets", learn)
        yield
    root.removeHandler(handler)
    leaks = find_leaks([*handler.lines, *_OUTPUTS], sorted(_SECRETS))
    if leaks:
        pytest.fail(f"{len(leaks)} log lines carry a secret:\n" + "\n".join(leaks[:20]))


# --- `voice-agent serve` as a real process ---------------------------------------------

VOICE_AGENT = Path(sys.executable).with_name("voice-agent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    """``voice-agent serve`` in a child process, its output in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/voice"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.http_url) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"voice-agent serve exited:\n{self.output()}")
                try:
                    if (await http.get("/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"voice-agent serve not ready:\n{self.output()}")
                await asyncio.sleep(0.05)

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        record_output(self.output())


StartServeProcess = Callable[..., Any]


@pytest.fixture
async def start_serve_process(
    fakes: FakeProviders, tmp_path: Path
) -> AsyncIterator[StartServeProcess]:
    """``await start_serve_process(MAX_CALLS="2", ...)``: a ready ServeProcess on the fakes."""
    processes: list[ServeProcess] = []
    logs: list[IO[bytes]] = []

    async def start(workers: int = 1, **env_overrides: str) -> ServeProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update(fakes.env())
        env.update({"LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **env_overrides})
        log_path = tmp_path / f"serve-{port}.log"
        log_file = log_path.open("wb")
        logs.append(log_file)
        proc = await asyncio.create_subprocess_exec(
            str(VOICE_AGENT),
            *("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            env=env,
            cwd=tmp_path,  # no developer .env file is read
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        server = ServeProcess(proc, port, log_path)
        processes.append(server)
        await server.wait_ready()
        return server

    yield start
    for server in processes:
        await server.stop()
    for log_file in logs:
        log_file.close()
