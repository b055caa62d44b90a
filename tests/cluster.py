"""Scale-out on loopback: the provider fakes, N ``voice-agent serve`` processes, and
Debian's nginx running ``deploy/nginx.conf`` (TLS swapped for plain HTTP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VOICE_AGENT = Path(sys.executable).with_name("voice-agent")
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_nginx_conf(ports: list[int], listen: int, prefix: Path) -> str:
    """deploy/nginx.conf for loopback: local upstreams, plain HTTP, logs under ``prefix``.

    Every swap must match, so the test breaks if the shipped file changes shape.
    """
    text = NGINX_CONF.read_text()

    def swap(pattern: str, repl: str, text: str, count: int) -> str:
        new, found = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert found == count, f"deploy/nginx.conf: {pattern!r} matched {found}, not {count}"
        return new

    upstreams = iter(ports)
    text, found = re.subn(
        r"server voice-\d+:8000", lambda _: f"server 127.0.0.1:{next(upstreams)}", text
    )
    assert found == len(ports), f"deploy/nginx.conf has {found} upstream servers"
    text = swap(r"^\s*listen \[::\]:\d+( ssl)?;\n", "", text, 2)
    text = swap(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{free_port()};", text, 1)
    text = swap(r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{listen};", text, 1)
    text = swap(r"^\s*ssl_\w+ .*\n", "", text, 4)
    text = swap(r"^worker_processes auto;", "worker_processes 2;", text, 1)
    text = swap(r"access_log /dev/stdout voice;", f"access_log {prefix}/access.log voice;", text, 1)
    return text


@dataclass
class Server:
    port: int
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_dir / f"serve-{self.port}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(VOICE_AGENT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.log_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(timeout_s):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.output()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    async def wait_exit(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            while (code := self.proc.poll() if self.proc else 0) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return code

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@dataclass
class Cluster:
    servers: list[Server]
    nginx_port: int
    database_url: str
    fakes: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]

    @property
    def voice_url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx_port}/voice"


def start_fakes(log: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``python -m testkit serve``; its first stdout line is the providers' environment."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testkit", "serve", "--stt-endpointing-ms", "300"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    with proc.stdout:
        line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"the fakes did not start:\n{log.read_text()}")
    return proc, json.loads(line)


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_argv(conf: str, prefix: Path) -> list[str]:
    """Write ``conf`` under ``prefix``; the nginx command line that runs it there."""
    path = prefix / "nginx.conf"
    path.write_text(conf)
    globals_ = f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;"
    return [NGINX, "-p", str(prefix), "-c", str(path), "-g", globals_]


def nginx_test(conf: str, prefix: Path) -> str:
    """``nginx -t`` of ``conf``: its complaint, or "" when the configuration is valid."""
    argv = nginx_argv(conf, prefix)
    check = subprocess.run([*argv[:1], "-t", *argv[1:]], capture_output=True, text=True)
    return "" if check.returncode == 0 else check.stderr


def start_nginx(conf: str, prefix: Path) -> subprocess.Popen[bytes]:
    problem = nginx_test(conf, prefix)
    assert not problem, problem
    return subprocess.Popen(nginx_argv(conf, prefix))


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
