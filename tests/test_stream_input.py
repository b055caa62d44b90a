"""Bad input on the /voice stream: every frame gets a defined outcome, no call is harmed.

Outcomes: the frame is ignored (the call goes on, with a log line under the call id), or
the stream is closed with a proper code (1009 too big, 1007 invalid UTF-8). Never an
unhandled exception, never an effect on another call. A hypothesis test throws random
frame sequences at a running server next to a healthy call; explicit cases pin down each
rule, and a real ``voice-agent serve`` shows the 1 MiB limit is enforced by the
WebSocket layer after reading only a frame header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from audio.wav import read_wav_file
from streamnode.client import CallEnded, StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import CallerLine, wait_until_quiet
from tests.conftest import FIXTURES, StartServeProcess, StartServer, VoiceServer
from wire.knowlarity import MAX_METADATA_DEPTH

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
SMALL_LIMIT = 16 * 1024  # MAX_FRAME_BYTES for the property test: oversized frames stay cheap
SILENCE_20MS = bytes(640)

# Lines that mean something escaped the handlers.
UNHANDLED = (
    "Exception in ASGI application",
    "Task exception was never retrieved",
    "ASGI callable returned without completing handshake",
    "Traceback",
)


def unhandled(records: list[logging.LogRecord]) -> list[str]:
    found = []
    for record in records:
        message = record.getMessage()
        if record.exc_info or any(marker in message for marker in UNHANDLED):
            found.append(f"{record.name}: {message[:200]}")
    return found


async def open_call(
    server: VoiceServer | str, metadata: str | Mapping[str, Any] | None = None
) -> StreamNodeClient:
    node = StreamNodeClient(sample_rate=16000)
    await node.connect(server if isinstance(server, str) else server.url)
    if metadata is not None:
        await node.send_metadata(metadata)
    return node


async def send_quietly(node: StreamNodeClient, frame: bytes | str, *, text: bool = False) -> None:
    """Send a frame; the server may already have closed the stream on purpose."""
    with contextlib.suppress(ConnectionClosed):
        ws = node._conn()
        if text and isinstance(frame, bytes):
            await ws.send(frame, text=True)  # raw bytes as a text frame: maybe bad UTF-8
        else:
            await ws.send(frame)


async def greeted_or_closed(node: StreamNodeClient, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
    """True if the greeting arrived, False if the server closed the stream first."""
    try:
        await node.wait_for("playAudio", timeout=timeout)
    except CallEnded:
        return False
    return True


@pytest.fixture
async def healthy_call(
    start_server: StartServer,
) -> AsyncIterator[tuple[VoiceServer, StreamNodeClient]]:
    """A server (small frame limit) with one well-behaved call streaming audio throughout."""
    server = await start_server(greeting="Hello.", max_frame_bytes=SMALL_LIMIT)
    node = await open_call(server, {"callid": "call-healthy"})
    await node.wait_for("playAudio", timeout=5)
    async with CallerLine(node, 16000):
        yield server, node
    await node.close()


async def wait_for_connections(server: VoiceServer, count: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while server.state.lifecycle.calls.connections != count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- explicit cases ---------------------------------------------------------------------

BOMBS = [
    pytest.param("[" * 4000 + "]" * 4000, id="nested-lists"),
    pytest.param(
        "(" * (MAX_METADATA_DEPTH + 1) + ")" * (MAX_METADATA_DEPTH + 1), id="just-too-deep"
    ),
    pytest.param("{'a': " * 1000 + "1" + "}" * 1000, id="nested-dicts"),
    pytest.param("9" * 5000, id="huge-int-literal"),
    pytest.param("{'callid': 'x' * 10**9}", id="string-multiplication"),
    pytest.param("__import__('os').system('false')", id="code"),
    pytest.param("1e999999999 ** 999", id="power"),
    pytest.param('"' + "\\" * 7000 + '"', id="escapes"),
    pytest.param("x" * 100_000, id="100KiB-over-metadata-cap"),
]


@pytest.mark.parametrize("frame", BOMBS)
async def test_malicious_metadata_is_refused_quickly_and_the_call_served(
    frame: str, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    started = time.monotonic()
    node = await open_call(server, frame)
    assert await greeted_or_closed(node)
    assert time.monotonic() - started < 2.0  # parsing gave up fast, no metadata timeout
    await node.close()
    (record,) = server.state.registry.recent()
    assert record.call_id.startswith("gen-")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Failed to parse metadata") for m in messages)
    assert unhandled(caplog.records) == []


async def test_audio_and_text_edge_cases_are_ignored_and_the_call_goes_on(
    fakes: FakeProviders, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    node = await open_call(server, {"callid": "call-edges"})
    await node.wait_for("playAudio", timeout=5)
    for frame in (
        b"",  # empty
        bytes(641),  # odd: its last byte waits for the next frame...
        bytes(639),  # ...and this one completes it, so the samples stay aligned
        "not json",
        json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"x").decode()}}),
        json.dumps({"callid": "call-imposter", "customer_number": "+910000000000"}),
        "",
    ):
        await node._conn().send(frame)
    async with CallerLine(node, 16000) as line:
        await wait_until_quiet(node)
        line.say(read_wav_file(FIXTURES / "question.wav").pcm)
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        await node.wait_for("playAudio", after=request.received_at, timeout=5)
    await node.close()
    assert request.messages[-1]["content"] == "What time do you open tomorrow?"
    ids = [r.call_id for r in server.state.registry.recent()]
    assert ids == ["call-edges"]  # the second metadata frame changed nothing
    lines = {(getattr(r, "call_id", "-"), r.getMessage().split(":")[0]) for r in caplog.records}
    assert ("call-edges", "Ignoring text frame #1 after metadata") in lines
    assert any(m.startswith("Ignoring a second metadata frame") for _, m in lines)
    assert unhandled(caplog.records) == []


async def test_audio_before_metadata_serves_the_call_under_a_generated_id(
    start_server: StartServer,
) -> None:
    server = await start_server(greeting="Hello.")
    node = await open_call(server)
    await node.send_audio(bytes(641))
    await node.wait_for("playAudio", timeout=5)
    await node.send_metadata({"callid": "call-late-metadata"})  # now just a text frame
    await node.send_audio(SILENCE_20MS)
    await node.close()
    (record,) = server.state.registry.recent()
    assert record.call_id.startswith("gen-")


async def test_invalid_utf8_text_closes_1007(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(greeting="Hello.")
    node = await open_call(server, {"callid": "call-utf8"})
    await node.wait_for("playAudio", timeout=5)
    await send_quietly(node, b"\xff\xfe not utf-8", text=True)
    assert await node.wait_closed(timeout=5)
    assert node.close_code == 1007 and node.closed_by_server
    await wait_for_connections(server, 0)
    assert unhandled(caplog.records) == []  # uvicorn's traceback became one warning
    messages = [(getattr(r, "call_id", "-"), r.getMessage()) for r in caplog.records]
    assert (
        "call-utf8",
        "Stream closed by the server (code 1007: invalid UTF-8 in a text frame)",
    ) in messages


@pytest.mark.parametrize("first", [True, False], ids=["as-metadata", "mid-call"])
async def test_oversized_frame_closes_1009_in_the_app_too(
    first: bool, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server started without --ws-max-size (uvicorn buffers up to 16 MiB) still refuses."""
    server = await start_server(greeting="Hello.")
    bystander = await open_call(server, {"callid": "call-bystander"})
    await bystander.wait_for("playAudio", timeout=5)
    node = await open_call(server, None if first else {"callid": "call-big"})
    if not first:
        await node.wait_for("playAudio", timeout=5)
    await send_quietly(node, bytes(2 * MIB))
    assert await node.wait_closed(timeout=10)
    assert node.close_code == 1009 and node.closed_by_server
    await bystander.send_audio(SILENCE_20MS)
    assert not bystander.closed
    await bystander.close()
    assert any("> MAX_FRAME_BYTES" in r.getMessage() for r in caplog.records)
    assert unhandled(caplog.records) == []


# --- the WebSocket layer of `voice-agent serve` ------------------------------------------


def raw_handshake(port: int, path: str = "/voice") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response[:100]
    return sock


def read_close_code(sock: socket.socket) -> int | None:
    """Read frames until a close frame (opcode 8); its code, or None if the socket ends."""
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        if not chunk:
            return None
        buffer += chunk
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            offset = 2
            if length == 126:
                length, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + length:
                break
            if opcode == 8:
                return int(struct.unpack("!H", buffer[offset : offset + 2])[0])
            buffer = buffer[offset + length :]


def oversized_frame_header(length: int) -> bytes:
    # FIN + binary, masked (client frames must be), 64-bit length, then the mask key.
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + os.urandom(4)


async def test_serve_refuses_a_2mib_frame_after_its_header_only(
    fakes: FakeProviders, start_serve_process: StartServeProcess
) -> None:
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine."))
    server = await start_serve_process(GREETING="Hello.")
    healthy = await open_call(server.url, {"callid": "call-healthy"})
    await healthy.wait_for("playAudio", timeout=10)
    async with CallerLine(healthy, 16000) as line:
        # Only the header of a 2 MiB frame: the server must answer 1009 without the body.
        sock = await asyncio.to_thread(raw_handshake, server.port)
        with sock:
            sock.sendall(oversized_frame_header(2 * MIB))
            started = time.monotonic()
            code = await asyncio.to_thread(read_close_code, sock)
        assert code == 1009
        assert time.monotonic() - started < 2.0
        # A whole 2 MiB frame from a real client: the same.
        big = await open_call(server.url, {"callid": "call-big"})
        await big.wait_for("playAudio", timeout=10)
        await send_quietly(big, bytes(2 * MIB))
        assert await big.wait_closed(timeout=10)
        assert big.close_code == 1009 and big.closed_by_server
        # The healthy call never noticed.
        await wait_until_quiet(healthy)
        line.say(read_wav_file(FIXTURES / "question.wav").pcm)
        request = (await fakes.openai.wait_for_requests(1, timeout_s=10))[0]
        await healthy.wait_for("playAudio", after=request.received_at, timeout=10)
    assert not healthy.closed
    await healthy.close()
    output = server.output()
    assert "Traceback" not in output and "Exception in ASGI" not in output
    closed = "Stream closed by the server{} (code 1009: message too big)"
    assert f"[call_id=call-big] [KNOWLARITY] {closed.format('')}" in output
    assert f"[call_id=-] [KNOWLARITY] {closed.format(' before the call started')}" in output


# --- property: random frame sequences next to a healthy call -----------------------------


@dataclass(frozen=True)
class Frame:
    kind: str  # "binary", "text", "bad-utf8"
    data: bytes | str

    def __repr__(self) -> str:  # short examples in hypothesis' report
        return f"{self.kind}({len(self.data)})"


METADATA_LIKE = st.sampled_from(
    [
        json.dumps({"callid": "call-prop"}),
        "{'callid': 'call-prop', 'call_type': 'inbound'}",
        json.dumps("{'callid': 'call-prop'}"),
        json.dumps({"event": "stop"}),
        "[" * 200,
        "{'a': " * 40 + "1" + "}" * 40,
        "",
    ]
)
ORDINARY = st.one_of(
    st.binary(max_size=2048).map(lambda b: Frame("binary", b)),  # odd, empty, garbage
    st.text(max_size=200).map(lambda t: Frame("text", t)),
    METADATA_LIKE.map(lambda t: Frame("text", t)),
)
FATAL = st.one_of(
    st.integers(SMALL_LIMIT + 1, SMALL_LIMIT + 4096).map(lambda n: Frame("binary", bytes(n))),
    st.binary(min_size=1, max_size=16).map(lambda b: Frame("bad-utf8", b"\xc3\x28" + b)),
)
# Mostly frames a call survives, so that sequences get past the first one.
FRAMES = st.one_of(ORDINARY, ORDINARY, ORDINARY, ORDINARY, ORDINARY, FATAL)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=6))
async def test_random_frames_get_a_defined_outcome(
    frames: list[Frame],
    healthy_call: tuple[VoiceServer, StreamNodeClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, healthy = healthy_call
    caplog.clear()  # one test function, many examples: judge each on its own records
    node = await open_call(server)
    try:
        for frame in frames:
            await send_quietly(node, frame.data, text=frame.kind == "bad-utf8")
        greeted = await greeted_or_closed(node)
        if not node.closed:
            await send_quietly(node, SILENCE_20MS)  # still a working call
            await asyncio.sleep(0.02)
    finally:
        await node.close()
    event(f"closed {node.close_code} by {'server' if node.closed_by_server else 'client'}")
    if node.closed_by_server:
        assert node.close_code in (1007, 1009), node.close_code
        too_big = any(f.kind == "binary" and len(f.data) > SMALL_LIMIT for f in frames)
        bad_utf8 = any(f.kind == "bad-utf8" for f in frames)
        assert (node.close_code == 1009 and too_big) or (node.close_code == 1007 and bad_utf8)
    else:
        assert greeted and node.close_code == 1000
    await wait_for_connections(server, 1)  # everything of this call is gone, the other stays
    assert not healthy.closed and healthy.problems == []
    assert unhandled(caplog.records) == []
