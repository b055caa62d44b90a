"""The playground's server side without a browser: page, assets, history, event feeds, /docs.

The feeds and the history are guarded like /voice (stream token, IP allow-list); the
feed replays a call, follows it, and closes after ``call_ended``; an unknown call's feed
gives up; the number of open feeds is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.events import (
    AgentSpeech,
    CallEnded,
    CallerSpeech,
    CallEvent,
    CallEventHub,
    CallStarted,
    TurnTimings,
)
from records.accumulator import CallAccumulator
from server.call_history import HubHistory, summarise
from tests.conftest import StartServer, VoiceServer

pytestmark = pytest.mark.timeout(60)

TOKEN = "pgtok-Rb4Tn8Zq2Lc6Vx1Hw"


def _publish_call(server: VoiceServer, call_id: str, *, ended: bool = True) -> None:
    for event in _call_events(call_id, ended=ended):
        server.state.events.publish(event)


def _call_events(call_id: str, *, ended: bool = True, started_at: float = 1e9) -> list[CallEvent]:
    events: list[CallEvent] = [
        CallStarted(call_id=call_id, sample_rate=8000, language="en", started_at=started_at),
        CallerSpeech(call_id=call_id, phase="final", text="hello", at_ms=900.0),
        TurnTimings(
            call_id=call_id,
            turn=1,
            user_text="hello",
            stt_final_ms=1000.0,
            llm_first_token_ms=1200.0,
            tts_first_audio_ms=1350.0,
            first_audio_sent_ms=1360.0,
        ),
        AgentSpeech(call_id=call_id, turn=1, text="Hi.", heard="Hi.", at_ms=1400.0),
    ]
    if ended:
        events.append(
            CallEnded(
                call_id=call_id,
                reason="caller_hangup",
                detail="",
                duration_s=4.2,
                turns=1,
                barge_ins=0,
                at_ms=4200.0,
            )
        )
    return events


def _feed_url(server: VoiceServer, call_id: str, token: str | None = None) -> str:
    base = server.url.removesuffix("/voice")
    return f"{base}/calls/{call_id}/events" + (f"?token={token}" if token else "")


async def test_the_page_and_its_assets_are_served_from_the_app(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/playground/[^"]+)"', page.text)
        assert "/playground/app.js" in assets and "/playground/style.css" in assets
        assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))
        for name in ("app.js", "call.js", "capture-worklet.js", "resampler.js", "player.js"):
            asset = await http.get(f"/playground/{name}")
            assert asset.status_code == 200, name
            assert "javascript" in asset.headers["content-type"], name
        config = (await http.get("/playground/config")).json()
        assert config == {
            "token_required": False,
            "sample_rates": [8000, 16000],
            "default_sample_rate": 16000,
            "history_source": "records",  # call records are on by default
        }


async def test_the_playground_can_be_switched_off(start_server: StartServer) -> None:
    server = await start_server(playground_enabled=False)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for path in ("/", "/playground/app.js", "/playground/config", "/calls"):
            assert (await http.get(path)).status_code == 404, path
    with pytest.raises(InvalidStatus):
        async with websockets.connect(_feed_url(server, "x")):
            pass


async def test_history_lists_calls_newest_first_and_opens_one(start_server: StartServer) -> None:
    server = await start_server(records_enabled=False)  # memory alone
    _publish_call(server, "call-a")
    _publish_call(server, "call-b", ended=False)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        listing = (await http.get("/calls")).json()
        assert listing["source"] == "memory"
        rows = {row["call_id"]: row for row in listing["calls"]}
        assert [row["call_id"] for row in listing["calls"]][:2] == ["call-b", "call-a"]
        assert rows["call-a"] == {
            "call_id": "call-a",
            "started_at": 1e9,
            "duration_s": 4.2,
            "turns": 1,
            "barge_ins": 0,
            "end_reason": "caller_hangup",
            "active": False,
            "sample_rate": 8000,
            "source": "memory",
        }
        assert rows["call-b"]["active"] and rows["call-b"]["end_reason"] is None
        assert rows["call-b"]["turns"] == 1
        assert len((await http.get("/calls?limit=1")).json()["calls"]) == 1
        assert (await http.get("/calls?limit=0")).status_code == 422
        detail = (await http.get("/calls/call-a")).json()
        assert [e["kind"] for e in detail["events"]] == [
            "call_started",
            "caller_speech",
            "turn_timings",
            "agent_speech",
            "call_ended",
        ]
        missing = await http.get("/calls/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        config = (await http.get("/playground/config")).json()
        assert config["history_source"] == "memory"


async def test_with_call_records_on_the_history_reads_the_store(start_server: StartServer) -> None:
    server = await start_server()
    store = server.app.state.ops.store
    # A call this process never held (another replica's, or before a restart): only stored.
    elsewhere = CallAccumulator("call-stored", server="other:1", mask=True, now=2e9)
    for event in _call_events("call-stored", started_at=2e9):
        elsewhere.add(event)
    await store.upsert([elsewhere.record])
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        listing = (await http.get("/calls")).json()
        assert listing["source"] == "records"
        row = next(r for r in listing["calls"] if r["call_id"] == "call-stored")
        assert row["source"] == "records" and row["end_reason"] == "caller_hangup"
        assert (row["turns"], row["duration_s"]) == (1, 4.2)
        detail = (await http.get("/calls/call-stored")).json()
        assert detail["source"] == "records" and not server.state.events.known("call-stored")
        by_kind = {e["kind"]: e for e in detail["events"]}
        assert by_kind["caller_speech"]["text"] == "hello"
        assert by_kind["agent_speech"]["text"] == "Hi."
        assert by_kind["turn_timings"]["llm_first_token_ms"] == 1200.0


async def test_history_and_feeds_are_guarded_like_voice(start_server: StartServer) -> None:
    server = await start_server(voice_ws_token=TOKEN)
    _publish_call(server, "call-a")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/playground/config")).json()["token_required"] is True
        assert (await http.get("/")).status_code == 200  # the page itself holds no data
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = await http.get("/calls", headers=headers)
            assert answer.status_code == 403 and TOKEN not in answer.text
            assert (await http.get("/calls/call-a", headers=headers)).status_code == 403
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/calls", headers=good)).status_code == 200
        assert (await http.get("/calls/call-a", headers=good)).status_code == 200
    for token in (None, "wrong"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(_feed_url(server, "call-a", token)):
                pass
        assert refused.value.response.status_code == 403
    async with websockets.connect(_feed_url(server, "call-a", TOKEN)) as feed:
        kinds = [json.loads(message)["kind"] async for message in feed]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"


async def test_the_ip_allow_list_guards_history_and_feeds(start_server: StartServer) -> None:
    server = await start_server(voice_allowed_ips="198.51.100.0/24")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        answer = await http.get("/calls")
        assert answer.status_code == 403 and "VOICE_ALLOWED_IPS" in answer.json()["detail"]
    with pytest.raises(InvalidStatus):
        async with websockets.connect(_feed_url(server, "call-a")):
            pass


async def test_a_feed_replays_follows_live_and_closes_after_the_call(
    start_server: StartServer,
) -> None:
    server = await start_server()
    hub = server.state.events
    hub.publish(CallStarted(call_id="live", sample_rate=16000, language="en"))
    async with websockets.connect(_feed_url(server, "live")) as feed:
        first = json.loads(await feed.recv())
        assert first["kind"] == "call_started" and first["call_id"] == "live"
        hub.publish(CallerSpeech(call_id="other", phase="final", text="not mine"))
        hub.publish(CallerSpeech(call_id="live", phase="interim", text="hel"))
        assert json.loads(await feed.recv())["text"] == "hel"
        hub.publish(
            CallEnded(
                call_id="live",
                reason="transfer",
                detail="",
                duration_s=1,
                turns=0,
                barge_ins=0,
                transferred_to="+911",
            )
        )
        ended = json.loads(await feed.recv())
        assert ended["kind"] == "call_ended" and ended["transferred_to"] == "+911"
        with pytest.raises(ConnectionClosed) as closed:
            await feed.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    await _no_feeds_left(server)


async def test_a_feed_for_a_call_that_never_starts_gives_up(start_server: StartServer) -> None:
    server = await start_server()
    server.app.state.call_feeds.idle_s = 0.2
    async with websockets.connect(_feed_url(server, "never")) as feed:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(feed.recv(), 5)
    await _no_feeds_left(server)


async def test_open_feeds_are_bounded_and_freed_when_the_page_leaves(
    start_server: StartServer,
) -> None:
    server = await start_server(max_calls=2)
    first = await websockets.connect(_feed_url(server, "a"))
    second = await websockets.connect(_feed_url(server, "b"))
    try:
        async with websockets.connect(_feed_url(server, "c")) as third:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(third.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        await first.close()
        await second.close()
    await _no_feeds_left(server)


async def _no_feeds_left(server: VoiceServer) -> None:
    for _ in range(100):
        if server.app.state.call_feeds.open == 0 and not server.state.events._subs:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("an event feed is still open")


async def test_docs_are_served_from_the_app(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        page = await http.get("/docs")
        assert (
            page.status_code == 200
            and "script-src 'self'" in page.headers["content-security-policy"]
        )
        urls = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", page.text)
        assert urls and all(url.startswith("/") for url in urls), urls
        for url in urls:
            assert (await http.get(url)).status_code == 200, url
        assert (await http.get("/redoc")).status_code == 404  # no offline ReDoc: off
        assert (await http.get("/docs/oauth2-redirect")).status_code == 200


def test_a_summary_needs_the_start_or_the_end_of_a_call() -> None:
    speech = CallerSpeech(call_id="x", phase="final", text="hi")
    assert summarise("x", [speech]) is None
    started = CallStarted(call_id="x", sample_rate=8000, language="en", started_at=100.0)
    running = summarise("x", [started, speech], now=103.5)
    assert running is not None and running.active and running.duration_s == 3.5
    no_clock = CallStarted(call_id="x", sample_rate=8000, language="en")
    unknown = summarise("x", [no_clock], now=103.5)
    assert unknown is not None and unknown.duration_s is None


async def test_the_hub_history_skips_calls_whose_start_was_evicted() -> None:
    hub = CallEventHub(replay=2)
    hub.publish(CallStarted(call_id="x", sample_rate=8000, language="en"))
    for text in ("a", "b"):
        hub.publish(CallerSpeech(call_id="x", phase="final", text=text))
    assert await HubHistory(hub).recent(10) == []
    assert await HubHistory(hub).detail("x") is None
