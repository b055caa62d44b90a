"""The abuse run's attackers and honest callers, loopback only, bounded in count and time.

Each attacker comes from its own loopback addresses (127.0.0.2 and up: on Linux the whole
127/8 is the loopback interface), as a real attacker comes from other addresses than the
Stream Node; honest calls come from 127.0.0.1. Used by ``python -m bench abuse`` (full
size, attackers and honest callers in separate processes) and by ``tests/test_abuse.py``
(small, in-process).

- ``idle_sockets``: WebSockets that complete the handshake (with the token: the worst
  case, a leaked token) and then never send a frame;
- ``bad_tokens``: raw upgrade requests with a wrong token, at a fixed rate;
- ``big_post``: one huge POST /api/calls (without a token, and with one), counting how
  much of the body the server took before it answered;
- ``fast_callers``: calls that stream audio at many times real time;
- ``honest_call``: a Stream Node call: greeting, one question, the reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from streamnode.call import load_caller_audio
from streamnode.caller_line import CallerLine
from streamnode.client import CallEnded, StreamNodeClient

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def sources(first: int, count: int) -> list[str]:
    """``count`` loopback addresses from 127.0.0.<first> on."""
    return [f"127.0.{(first + n) // 250}.{(first + n) % 250 + 1}" for n in range(count)]


def _status(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


# --- idle sockets ---------------------------------------------------------------------


@dataclass
class IdleResult:
    outcomes: Counter[str] = field(default_factory=Counter)  # per connection attempt
    held_s: list[float] = field(default_factory=list)  # how long each accepted one stayed
    close_codes: Counter[int] = field(default_factory=Counter)
    greeted: int = 0  # accepted sockets that were sent anything at all

    def to_json(self) -> dict[str, Any]:
        held = sorted(self.held_s)
        return {
            "outcomes": dict(self.outcomes),
            "close_codes": dict(self.close_codes),
            "greeted": self.greeted,
            "held_s_median": held[len(held) // 2] if held else None,
            "held_s_max": held[-1] if held else None,
        }


async def idle_sockets(
    url: str, count: int, addresses: list[str], seconds: float, *, reconnect: bool = True
) -> IdleResult:
    """``count`` workers spread over ``addresses``, each holding a stream that never sends
    a frame; with ``reconnect`` a worker opens another when its stream is closed (at once)
    or refused (after a second), until ``seconds`` have passed."""
    result = IdleResult()
    deadline = time.monotonic() + seconds

    async def hold(ws: ClientConnection) -> None:
        opened = time.monotonic()
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - opened)):
                async for _ in ws:
                    result.greeted += 1  # a silent stream should never be spoken to
                    break
                await ws.wait_closed()
        result.held_s.append(round(time.monotonic() - opened, 2))
        if ws.close_code is not None:
            result.close_codes[ws.close_code] += 1
        with contextlib.suppress(Exception):
            await ws.close()

    async def worker(n: int) -> None:
        source = addresses[n % len(addresses)]
        while time.monotonic() < deadline:
            try:
                ws = await connect(url, local_addr=(source, 0), open_timeout=10, compression=None)
            except (OSError, WebSocketException, TimeoutError) as exc:
                result.outcomes[_status(exc)] += 1
                await asyncio.sleep(1.0)
            else:
                result.outcomes["accepted"] += 1
                await hold(ws)
            if not reconnect:
                return

    await asyncio.gather(*(worker(n) for n in range(count)))
    return result


# --- bad tokens -----------------------------------------------------------------------


async def handshake_status(url: str, source: str, timeout_s: float = 5.0) -> str:
    """One raw WebSocket upgrade from ``source``: the status it gets ("101", "403", ...)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            try:
                writer.write(request.encode())
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    fields = line.split()
    return fields[1].decode() if len(fields) >= 2 else "no answer"


async def bad_tokens(
    base_url: str, per_s: float, seconds: float, addresses: list[str]
) -> Counter[str]:
    """``per_s`` handshakes per second with a wrong token, for ``seconds``."""
    statuses: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        statuses[
            await handshake_status(f"{base_url}/wrong-token-{n}", addresses[n % len(addresses)])
        ] += 1

    started = time.monotonic()
    total = int(per_s * seconds)
    for n in range(total):
        due = started + n / per_s
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return statuses


# --- a huge POST ----------------------------------------------------------------------


@dataclass
class PostResult:
    status: str
    body_bytes_sent: int  # how much of the body got out before the answer (or the close)
    seconds: float


async def big_post(
    http_url: str,
    size: int,
    source: str,
    token: str | None = None,
    chunked: bool = False,
    timeout_s: float = 30.0,
) -> PostResult:
    """POST ``size`` bytes to /api/calls, writing until the server answers or closes."""
    parts = urlsplit(http_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = [
        "POST /api/calls HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
    ]
    headers.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    if token:
        headers.append(f"Authorization: Bearer {token}")
    started = time.monotonic()
    sent = 0
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    answer = asyncio.ensure_future(reader.readline())
    block = b"x" * 65536
    failure = ""
    try:
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        async with asyncio.timeout(timeout_s):
            while sent < size and not answer.done():
                piece = block[: size - sent]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    continue  # the server is not reading: wait for its answer instead
                sent += len(piece)
    except (OSError, TimeoutError) as exc:
        failure = type(exc).__name__  # e.g. reset: the server answered and closed
    try:
        line = await asyncio.wait_for(answer, 5.0)
    except (OSError, TimeoutError) as exc:
        line = b""
        failure = failure or type(exc).__name__
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    fields = line.split()
    status = fields[1].decode() if len(fields) >= 2 else (failure or "closed")
    return PostResult(status, sent, round(time.monotonic() - started, 3))


# --- fast callers ---------------------------------------------------------------------


@dataclass
class FastResult:
    outcomes: Counter[str] = field(default_factory=Counter)
    audio_s_sent: float = 0.0
    wall_s: float = 0.0
    frames_received: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "outcomes": dict(self.outcomes)}


async def fast_callers(
    url: str, count: int, speedup: float, seconds: float, addresses: list[str], rate: int = 8000
) -> FastResult:
    """``count`` calls streaming speech at ``speedup`` x real time for ``seconds``, in
    100 ms frames at ``rate`` (the URL should ask for that rate: ``?sample_rate=``)."""
    pcm, _ = load_caller_audio(
        FIXTURES / ("question_8k.wav" if rate == 8000 else "question.wav"), rate
    )
    frame = rate * 2 // 10  # 100 ms
    result = FastResult()
    started = time.monotonic()

    async def receive(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                result.frames_received += 1

    async def one(n: int) -> None:
        try:
            ws = await connect(url, local_addr=(addresses[n % len(addresses)], 0), compression=None)
        except (OSError, WebSocketException, TimeoutError) as exc:
            result.outcomes[_status(exc)] += 1
            return
        reader = asyncio.create_task(receive(ws))
        try:
            await ws.send(json.dumps({"callid": f"fast-{n}", "customer_number": "+910000000000"}))
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < seconds:
                offset = (i * frame) % max(frame, len(pcm) - frame)
                await ws.send(pcm[offset : offset + frame])
                result.audio_s_sent += 0.1
                i += 1
                await asyncio.sleep(max(0.0, t0 + i * 0.1 / speedup - time.monotonic()))
            result.outcomes["streamed"] += 1
        except ConnectionClosed:
            result.outcomes["closed by server"] += 1
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    await asyncio.gather(*(one(n) for n in range(count)))
    result.wall_s = round(time.monotonic() - started, 2)
    result.audio_s_sent = round(result.audio_s_sent, 1)
    return result


# --- honest calls ---------------------------------------------------------------------


@dataclass
class HonestResult:
    call_id: str
    greeting_ms: float | None = None
    reply_ms: float | None = None  # end of the caller's question -> first reply audio
    error: str | None = None

    @property
    def served(self) -> bool:
        return self.error is None and self.greeting_ms is not None and self.reply_ms is not None


async def honest_call(url: str, call_id: str, timeout_s: float = 20.0) -> HonestResult:
    """Connect like the Stream Node, hear the greeting, ask a question, hear the reply."""
    result = HonestResult(call_id)
    speech, rate = load_caller_audio(FIXTURES / "question.wav", 16000)
    node = StreamNodeClient(sample_rate=rate, keep_audio=False)
    try:
        await node.connect(url)
        sent = await node.send_metadata(
            {
                "callid": call_id,
                "virtual_number": "+911140000000",
                "customer_number": "+919876543210",
            }
        )
        async with CallerLine(node, rate) as line:
            greeting = await node.wait_for("playAudio", timeout=timeout_s)
            result.greeting_ms = round((greeting.t - sent) * 1000, 1)
            async with asyncio.timeout(timeout_s):
                while node.is_playing:  # noqa: ASYNC110  # a computed deadline, not an event
                    await asyncio.sleep(max(0.02, node.playing_until - time.monotonic()))
            line.say(speech)
            end = await line.said(timeout=timeout_s)
            reply = await node.wait_for("playAudio", after=end, timeout=timeout_s)
            result.reply_ms = round((reply.t - end) * 1000, 1)
    except (OSError, TimeoutError, CallEnded, WebSocketException) as exc:
        result.error = _status(exc)
    finally:
        with contextlib.suppress(Exception):
            await node.close()
    return result
