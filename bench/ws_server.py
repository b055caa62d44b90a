"""CPU per caller frame of the WebSocket server layer alone, per implementation.

    python -m bench.ws_server             # uvicorn's --ws choices, granian if installed
    python -m bench.ws_server --streams 50 --seconds 10 --json

A minimal ASGI app stands in for ``/voice``: it reads binary frames and answers every
fifth one with a ``playAudio``-sized text frame (what a call does: 50 frames in, 10
``playAudio`` out per second). The "floor" row's app also forwards the audio to an STT
socket (a sink in this process) in 40 ms messages: the least any voice server on this
stack must do per caller frame, before a VAD, a transcript or a turn. It runs in its own
process under each server; callers stream 20 ms frames (640 B) in real time from this
process. The figure is the server process's CPU time (``psutil``, user + system) per
inbound frame: the cost of the WebSocket implementation and the ASGI hop, which every
call pays 50 times a second, before any of our code runs. CPU time, unlike latency,
barely moves with other load on the box, so this can be read on a shared machine (run
it twice).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from . import procs

FRAME = bytes(640)  # 20 ms at 16 kHz
REPLY = '{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"%s"}}' % ("A" * 4320)

# The stand-in app, written to a temporary module so each server imports it by name.
APP_SOURCE = f"""
REPLY = {REPLY!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({{"type": "websocket.accept"}})
    frames = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        frames += 1
        if frames % 5 == 0:
            await send({{"type": "websocket.send", "text": REPLY}})


async def forward_app(scope, receive, send):
    # The floor of a voice server: app's work plus the caller's audio forwarded to an
    # STT socket in 40 ms messages (websockets' asyncio client, cheaper than the SDK's).
    if scope["type"] != "websocket":
        return await app(scope, receive, send)
    import os
    from websockets.asyncio.client import connect

    await receive()  # websocket.connect
    await send({{"type": "websocket.accept"}})
    async with connect(os.environ["WSBENCH_UPSTREAM"], compression=None) as upstream:
        frames = 0
        held = b""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frames += 1
            held += message["bytes"]
            if frames % 2 == 0:
                await upstream.send(held)
                held = b""
            if frames % 5 == 0:
                await send({{"type": "websocket.send", "text": REPLY}})
"""


def servers() -> dict[str, list[str]]:
    uvicorn = [procs.PYTHON, "-m", "uvicorn", "wsbench_app:app", "--loop", "uvloop"]
    uvicorn += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    choices = ("websockets-sansio", "websockets", "wsproto")
    out = {f"uvicorn --ws {ws}": [*uvicorn, "--ws", ws] for ws in choices}
    floor = [a.replace("wsbench_app:app", "wsbench_app:forward_app") for a in uvicorn]
    out["uvicorn --ws websockets-sansio, + forward to STT (floor)"] = [
        *floor,
        *("--ws", "websockets-sansio"),
    ]
    if importlib.util.find_spec("granian") is not None:
        granian = Path(procs.PYTHON).with_name("granian")
        out["granian --interface asgi"] = [
            *(str(granian), "--interface", "asgi", "--loop", "uvloop", "--workers", "1"),
            *("--runtime-mode", "st", "--log-level", "warning", "wsbench_app:app"),
        ]
    return out


async def _sink(ws: ServerConnection) -> None:
    async for _ in ws:  # the STT's side of the floor app: read and drop
        pass


async def _caller(url: str, seconds: float) -> int:
    sent = 0
    async with connect(url, compression=None, max_size=2**20) as ws:

        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            await ws.send(FRAME)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))
        reader.cancel()
    return sent


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of the server and its worker processes (granian runs one)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        times = p.cpu_times()
        total += times.user + times.system
    return total


async def _measure(url: str, pid: int, streams: int, seconds: float) -> dict[str, float]:
    await _caller(url, 0.2)  # warm-up: imports, first connection
    before = _tree_cpu_s(pid)
    frames = sum(await asyncio.gather(*(_caller(url, seconds) for _ in range(streams))))
    cpu = _tree_cpu_s(pid) - before
    return {"frames": frames, "server_cpu_us_per_frame": round(cpu / frames * 1e6, 1)}


def run_one(
    name: str, argv: list[str], streams: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    port, sink = procs.free_port(), procs.free_port()
    argv = [*argv, "--port", str(port)]
    env = {"PYTHONPATH": str(workdir), "PATH": "/usr/bin:/bin"}
    env["WSBENCH_UPSTREAM"] = f"ws://127.0.0.1:{sink}/"  # only the floor app uses it
    with procs.managed(argv, env, workdir / f"{port}.log", cwd=workdir) as proc:
        measured = _started_then_measured(name, proc, (port, sink), streams, seconds, workdir)
        return asyncio.run(measured)


async def _started_then_measured(
    name: str, proc: Any, ports: tuple[int, int], streams: int, seconds: float, workdir: Path
) -> dict[str, float]:
    port, sink = ports
    url = f"ws://127.0.0.1:{port}/"
    async with serve(_sink, "127.0.0.1", sink, compression=None, max_size=2**20):
        deadline = time.monotonic() + 20
        while True:
            try:
                await _caller(url, 0.02)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name} did not start; see {workdir}/{port}.log") from None
                await asyncio.sleep(0.1)
        return await _measure(url, proc.pid, streams, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.ws_server")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "wsbench_app.py").write_text(APP_SOURCE)
        for name, server_argv in servers().items():
            try:
                results[name] = run_one(name, server_argv, args.streams, args.seconds, workdir)
            except RuntimeError as exc:
                results[name] = {"error": str(exc)}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("| server | frames | server CPU µs per inbound frame (+ 1/5 playAudio out) |")
        print("|---|---|---|")
        for name, r in results.items():
            cell = r.get("server_cpu_us_per_frame", r.get("error"))
            print(f"| {name} | {r.get('frames', '–')} | {cell} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
