"""Call events across workers: the playground's feed and history whichever worker answers.

First two relays in one process (two hubs, real Unix sockets), then a real
``voice-agent serve --workers 2``: a call on one worker, feeds and history requests on
fresh connections (the kernel picks a worker for each), every one of them served.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from pipeline.events import CallEnded, CallerSpeech, CallEventHub, CallStarted
from server.worker_relay import WorkerRelay
from streamnode.client import StreamNodeClient
from tests.conftest import StartServeProcess

pytestmark = pytest.mark.timeout(120)


def _started(call_id: str, at: float) -> CallStarted:
    return CallStarted(call_id=call_id, sample_rate=16000, language="en", started_at=at)


def _ended(call_id: str) -> CallEnded:
    return CallEnded(
        call_id=call_id, reason="caller_hangup", detail="", duration_s=1.0, turns=0, barge_ins=0
    )


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[tuple[CallEventHub, WorkerRelay, WorkerRelay]]:
    directory = tmp_path / "relay"
    theirs = CallEventHub()
    mine = WorkerRelay(CallEventHub(), directory, 0)
    other = WorkerRelay(theirs, directory, 1)
    assert await mine.start() and await other.start()
    try:
        yield theirs, mine, other
    finally:
        await mine.aclose()
        await other.aclose()
    assert not directory.exists()  # the last one out removed it


async def test_a_call_held_by_a_sibling_is_relayed_live(
    relays: tuple[CallEventHub, WorkerRelay, WorkerRelay],
) -> None:
    theirs, mine, _ = relays
    assert await mine.open_feed("elsewhere") is None  # nobody holds it (yet)
    theirs.publish(_started("elsewhere", 100.0))
    feed = await mine.open_feed("elsewhere")
    assert feed is not None
    assert (await anext(feed))["kind"] == "call_started"
    theirs.publish(CallerSpeech(call_id="elsewhere", phase="final", text="hi"))
    assert (await anext(feed))["text"] == "hi"
    theirs.publish(_ended("elsewhere"))
    assert [e["kind"] async for e in feed] == ["call_ended"]
    for _ in range(50):  # the sibling's side of the feed ends with the call
        if not theirs._subs:
            break
        await asyncio.sleep(0.02)
    assert not theirs._subs


async def test_a_page_leaving_a_relayed_feed_frees_the_siblings_subscription(
    relays: tuple[CallEventHub, WorkerRelay, WorkerRelay],
) -> None:
    theirs, mine, _ = relays
    theirs.publish(_started("long", 100.0))
    feed = await mine.open_feed("long")
    assert feed is not None
    await anext(feed)
    await feed.aclose()
    for _ in range(50):
        if not theirs._subs:
            break
        await asyncio.sleep(0.02)
    assert not theirs._subs


async def test_history_merges_every_workers_calls_newest_first(
    relays: tuple[CallEventHub, WorkerRelay, WorkerRelay],
) -> None:
    theirs, mine, _ = relays
    mine._hub.publish(_started("mine-old", 100.0))
    theirs.publish(_started("theirs-new", 200.0))
    theirs.publish(_ended("theirs-new"))
    rows = await mine.recent(10)
    assert [row.call_id for row in rows] == ["theirs-new", "mine-old"]
    assert [row.call_id for row in await mine.recent(1)] == ["theirs-new"]
    detail = await mine.detail("theirs-new")
    assert detail is not None and [e["kind"] for e in detail.events] == [
        "call_started",
        "call_ended",
    ]
    assert await mine.detail("nowhere") is None


async def test_a_dead_siblings_socket_is_skipped(
    relays: tuple[CallEventHub, WorkerRelay, WorkerRelay],
) -> None:
    _, mine, _ = relays
    (mine.directory / "worker-7.sock").touch()  # a worker that died without tidying up
    assert await mine.open_feed("x") is None
    assert await mine.recent(5) == []
    (mine.directory / "worker-7.sock").unlink()


async def test_a_directory_others_can_enter_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    relay = WorkerRelay(CallEventHub(), shared, 0)
    assert not await relay.start()
    assert not relay.path.exists()


async def test_two_workers_serve_the_playground_whichever_gets_the_connection(
    start_serve_process: StartServeProcess,
) -> None:
    server = await start_serve_process(workers=2)
    base = server.url.removesuffix("/voice")
    ready: set[int] = set()
    async with asyncio.timeout(60):
        while len(ready) < 2:  # each worker listens once it is warm
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                answer = await http.get("/ready")
                if answer.status_code == 200:
                    ready.add(answer.json()["pid"])
    node = StreamNodeClient(sample_rate=16000)
    try:
        await node.connect(server.url)
        await node.send_metadata({"callid": "web-relay-1"})
        await node.wait_for("playAudio", timeout=15)
        active: dict[int, int] = {}  # pid -> its calls
        for _ in range(12):  # new connections: about half land on the other worker
            async with websockets.connect(f"{base}/calls/web-relay-1/events") as feed:
                first = json.loads(await asyncio.wait_for(feed.recv(), 10))
                assert first["kind"] == "call_started" and first["call_id"] == "web-relay-1"
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                rows = (await http.get("/calls")).json()["calls"]
                assert [row["call_id"] for row in rows] == ["web-relay-1"]
                health = (await http.get("/health")).json()
                active[health["pid"]] = health["active_calls"]
        # Requests reached both workers, and only one holds the call: the other relayed it.
        assert sorted(active.values()) == [0, 1], active
    finally:
        await node.close()
    async with websockets.connect(f"{base}/calls/web-relay-1/events") as feed:
        kinds = [json.loads(message)["kind"] async for message in feed]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
    assert "Traceback" not in server.output()
