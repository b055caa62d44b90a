"""Admission and graceful shutdown: MAX_CALLS, /ready, and the SIGTERM drain.

The drain is tested three ways: the pure ``Lifecycle`` with stand-in sessions, the app
in-process (readiness and refusals), and ``voice-agent serve`` as a real process that
gets SIGTERM with live simulated calls on it.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from pipeline.events import EndReason
from server import knowlarity_line
from server.lifecycle import DRAIN_REASON, Lifecycle, LiveCalls
from streamnode.client import StreamNodeClient
from tests.caller import CallerLine
from tests.conftest import StartServeProcess, StartServer

pytestmark = pytest.mark.timeout(60)


class StandInSession:
    """Records end_call; the call 'hangs up' (releases its slot) after the goodbye."""

    def __init__(self, calls: LiveCalls, goodbye_s: float = 0.05) -> None:
        self.calls = calls
        self.goodbye_s = goodbye_s
        self.reasons: list[str] = []

    async def end_call(self, reason: str, *, kind: EndReason = "timeout") -> None:
        self.reasons.append(reason)
        await asyncio.sleep(self.goodbye_s)
        self.calls.release()


# --- the pure parts ----------------------------------------------------------------------


async def test_live_calls_admit_up_to_the_limit_and_wait_idle() -> None:
    calls = LiveCalls()
    assert calls.try_admit(2) and calls.try_admit(2)
    assert not calls.try_admit(2)
    assert calls.connections == 2
    assert not await calls.wait_idle(0.05)
    asyncio.get_running_loop().call_later(0.05, calls.release)
    asyncio.get_running_loop().call_later(0.1, calls.release)
    started = time.monotonic()
    assert await calls.wait_idle(2.0)
    assert 0.08 < time.monotonic() - started < 1.0
    assert calls.try_admit(1)


async def test_session_registration_is_undone_when_the_call_ends() -> None:
    calls = LiveCalls()
    session, same_id = StandInSession(calls), StandInSession(calls)
    with calls.session("call-1", session):
        with calls.session("call-1", same_id):  # a reused call id hides no call
            assert calls.sessions == {session: "call-1", same_id: "call-1"}
        assert calls.sessions == {session: "call-1"}
    assert calls.sessions == {}


async def test_drain_waits_for_calls_then_ends_the_rest_once() -> None:
    lifecycle = Lifecycle()
    calls = lifecycle.calls
    quick, stubborn = StandInSession(calls), StandInSession(calls)
    for call_id, session in (("quick", quick), ("stubborn", stubborn)):
        assert calls.try_admit(10)
        calls.sessions[session] = call_id

    def quick_hangs_up() -> None:  # within the drain time
        del calls.sessions[quick]
        calls.release()

    asyncio.get_running_loop().call_later(0.1, quick_hangs_up)
    exits: list[float] = []
    started = time.monotonic()
    lifecycle.begin_drain(0.4, then=lambda: exits.append(time.monotonic()))
    lifecycle.begin_drain(0.4, then=lambda: exits.append(-1.0))  # a second SIGTERM: no-op
    assert lifecycle.draining
    await asyncio.wait_for(lifecycle.drained.wait(), 5)
    assert quick.reasons == []
    assert stubborn.reasons == [DRAIN_REASON]
    assert len(exits) == 1 and exits[0] - started >= 0.4
    assert calls.connections == 0
    await lifecycle.aclose()


async def test_drain_with_no_calls_ends_at_once() -> None:
    lifecycle = Lifecycle()
    done: list[bool] = []
    lifecycle.begin_drain(30.0, then=lambda: done.append(True))
    await asyncio.wait_for(lifecycle.drained.wait(), 1)
    assert done == [True]
    await lifecycle.aclose()


def test_signal_hooks_leave_a_non_uvicorn_process_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)

    async def install() -> bool:
        return Lifecycle().install_signal_handlers(1.0)

    assert asyncio.run(install()) is False
    assert signal.getsignal(signal.SIGTERM) is before


# --- in-process: readiness and refusals ---------------------------------------------------


async def test_ready_turns_503_and_new_calls_are_refused_once_draining(
    start_server: StartServer,
) -> None:
    server = await start_server(greeting="Hello.")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        async with StreamNodeClient(sample_rate=16000) as node:
            await node.connect(server.url)
            await node.send_metadata({"callid": "call-before-drain"})
            await node.wait_for("playAudio", timeout=5)
            server.state.lifecycle.begin_drain(30.0)
            draining = await http.get("/ready")
            assert draining.status_code == 503
            body = draining.json()
            assert body.pop("pid") > 0 and body.pop("worker") is None  # one process, no workers
            assert body == {"status": "draining", "active_calls": 1, "max_calls": 200}
            with pytest.raises(InvalidStatus) as refused:
                await StreamNodeClient().connect(server.url)
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "5"
            assert not node.closed  # the call in progress goes on
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["draining"] is True


async def test_max_calls_refuses_with_503_and_frees_the_slot_on_hang_up(
    start_server: StartServer,
) -> None:
    server = await start_server(greeting="Hello.", max_calls=2)
    async with (
        StreamNodeClient(sample_rate=16000) as first,
        StreamNodeClient(sample_rate=16000) as second,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        for node, call_id in ((first, "call-max-1"), (second, "call-max-2")):
            await node.connect(server.url)
            await node.send_metadata({"callid": call_id})
            await node.wait_for("playAudio", timeout=5)
        with pytest.raises(InvalidStatus) as refused:
            await StreamNodeClient().connect(server.url)
        assert refused.value.response.status_code == 503
        full = await http.get("/ready")
        assert full.status_code == 503 and full.json()["status"] == "full"
        await second.close()
        async with asyncio.timeout(5):
            while server.state.lifecycle.calls.connections > 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await http.get("/ready")).status_code == 200
        async with StreamNodeClient(sample_rate=16000) as third:
            await third.connect(server.url)
            await third.send_metadata({"callid": "call-max-3"})
            await third.wait_for("playAudio", timeout=5)
        assert not first.closed


async def test_a_peer_that_ignores_disconnect_is_closed_after_a_grace(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise a Stream Node (or anyone) that never hangs up holds a MAX_CALLS slot."""
    monkeypatch.setattr(knowlarity_line, "DISCONNECT_GRACE_S", 0.3)
    server = await start_server(greeting="Hello.", silence_timeout_s=1.0)
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-lingers"})
        gone = await node.wait_for("disconnect", timeout=10)
        assert await node.wait_closed(timeout=5)
        closed_after = time.monotonic() - gone.t
    assert node.closed_by_server and node.close_code == 1000
    assert 0.3 <= closed_after < 3.0
    async with asyncio.timeout(5):
        while server.state.lifecycle.calls.connections:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --- a real `voice-agent serve` process and SIGTERM ----------------------------------------


async def test_sigterm_drains_live_calls_then_exits_0(
    start_serve_process: StartServeProcess,
) -> None:
    server = await start_serve_process(DRAIN_SECONDS="2.5", GREETING="Hello.")
    async with (
        StreamNodeClient(sample_rate=16000) as leaving,
        StreamNodeClient(sample_rate=16000) as staying,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        for node, call_id in ((leaving, "call-leaves"), (staying, "call-stays")):
            await node.connect(server.url)
            await node.send_metadata({"callid": call_id})
            await node.wait_for("playAudio", timeout=10)
        async with CallerLine(leaving, 16000), CallerLine(staying, 16000):
            await asyncio.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            async with asyncio.timeout(1.0):  # readiness flips at once, not after the drain
                while (await http.get("/ready")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            with pytest.raises(InvalidStatus) as refused:
                await StreamNodeClient().connect(server.url)
            assert refused.value.response.status_code == 503
            await asyncio.sleep(0.5)
            await leaving.close()  # this caller finishes within the drain time
            gone = await staying.wait_for("disconnect", timeout=20)
        await staying.close()
        code = await server.wait_exit(timeout_s=20)

    assert code == 0
    assert gone.t - signalled >= 2.5  # the drain time was given in full
    goodbye = [e for e in staying.events if e.kind == "playAudio" and e.t > signalled]
    assert goodbye and all(e.t < gone.t for e in goodbye)
    assert staying.problems == []
    assert "disconnect" not in leaving.counts and leaving.close_code == 1000
    assert not leaving.closed_by_server
    output = server.output()
    assert "Draining: refusing new calls; 2 in progress" in output
    assert f"Ending the call: {DRAIN_REASON}" in output
    assert "call_id=call-stays" in output.split(f"Ending the call: {DRAIN_REASON}")[0][-200:]
    assert "Drain complete" in output
    assert "Traceback" not in output
    assert "without completing handshake" not in output  # the 503 left no ERROR behind


async def test_a_second_sigterm_skips_the_drain(
    start_serve_process: StartServeProcess,
) -> None:
    server = await start_serve_process(DRAIN_SECONDS="60", GREETING="Hello.")
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(server.url)
        await node.send_metadata({"callid": "call-cut-short"})
        await node.wait_for("playAudio", timeout=10)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = await server.wait_exit(timeout_s=10)
        assert await node.wait_closed(timeout=5)
    assert time.monotonic() - started < 5.0
    assert node.close_code == 1012  # uvicorn's "service restart" for what was left
    assert code == -signal.SIGTERM  # a forced stop is not a clean exit
    assert "Traceback" not in server.output()
