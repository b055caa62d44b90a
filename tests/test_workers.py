"""``voice-agent serve --workers N``: processes on one port, each with its share and drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import httpx
import pytest

from server.workers import bind_reuseport, worker_share
from streamnode.client import StreamNodeClient
from testkit import FakeProviders
from tests.conftest import StartServeProcess, free_port


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_shares_add_up_to_max_calls(workers: int) -> None:
    for max_calls in range(workers, 60):
        shares = [worker_share(max_calls, workers, i) for i in range(workers)]
        assert sum(shares) == max_calls
        assert max(shares) - min(shares) <= 1


def test_every_worker_gets_a_call_even_below_one_each() -> None:
    assert [worker_share(1, 3, i) for i in range(3)] == [1, 1, 1]


def test_workers_can_bind_the_same_port() -> None:
    port = free_port()
    first = bind_reuseport("127.0.0.1", port)
    second = bind_reuseport("127.0.0.1", port)
    try:
        assert first.getsockname() == second.getsockname()
    finally:
        first.close()
        second.close()


async def _health(http_url: str) -> dict[str, Any]:
    # A new connection each time: the kernel picks a worker per connection.
    async with httpx.AsyncClient(base_url=http_url) as http:
        body: dict[str, Any] = (await http.get("/health")).json()
        return body


async def _ready(http_url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.get("/ready")
        return response.status_code, response.json()


async def test_two_workers_share_the_port_and_drain_together_on_sigterm(
    fakes: FakeProviders, start_serve_process: StartServeProcess
) -> None:
    server = await start_serve_process(workers=2, MAX_CALLS="81", DRAIN_SECONDS="2")
    readiness: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(60):
        while len(readiness) < 2:  # each connection lands on one worker or the other
            status, body = await _ready(server.http_url)
            if status == 200:
                readiness[body["pid"]] = body
    assert sorted(b["worker"] for b in readiness.values()) == [0, 1]
    assert sorted(b["max_calls"] for b in readiness.values()) == [40, 41]
    assert fakes.cartesia.sockets_opened == 2  # one Cartesia socket per process, warm

    nodes: list[StreamNodeClient] = []
    try:
        calls_by_pid: dict[int, int] = {}
        for n in range(40):  # until both workers hold a call (each call: 1 in 2)
            node = StreamNodeClient(sample_rate=16000)
            nodes.append(node)
            await node.connect(server.url)
            await node.send_metadata({"callid": f"call-{n}"})
            await node.wait_for("playAudio", timeout=15)
            async with asyncio.timeout(30):
                while True:
                    health = await _health(server.http_url)
                    calls_by_pid[health["pid"]] = health["active_calls"]
                    if len(calls_by_pid) == 2:
                        break
            if all(calls_by_pid.values()) and sum(calls_by_pid.values()) == len(nodes):
                break
        assert set(calls_by_pid) == set(readiness)
        assert all(calls_by_pid.values()), calls_by_pid

        server.send_signal(signal.SIGTERM)
        after: list[int] = []
        async with asyncio.timeout(30):
            for node in nodes:  # every call, on either worker, gets its goodbye
                await node.wait_for("disconnect", timeout=30)
                if len(after) < 10:
                    with contextlib.suppress(httpx.TransportError):  # that worker has closed
                        after.append((await _ready(server.http_url))[0])
        code = await server.wait_exit(timeout_s=60)
    finally:
        for node in nodes:
            await node.close()
    assert code == 0
    assert 200 not in after  # no worker took calls once the drain began
    await fakes.cartesia.wait_until(lambda: not fakes.cartesia.sockets)
    assert fakes.cartesia.socket_closes == [1000, 1000]  # each worker closed its socket
    output = server.output()
    assert output.count("Drain complete") == 2
    assert "All workers stopped | exit codes [0, 0]" in output
    assert "Traceback" not in output
