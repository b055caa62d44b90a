"""One real call through the server, then what operators see of it: the record in the
database (read API, CDR match), ``/metrics``, and the metric sums of several processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from audio.wav import read_wav_file
from kpi.models import CdrEvent
from kpi.service import KpiService
from records.store import RecordStore
from server.operations import Operations
from streamnode.client import StreamNodeClient
from testkit import FakeProviders, llm
from tests.caller import CallerLine, wait_until_quiet
from tests.conftest import FIXTURES, StartServeProcess, StartServer, register_secret

TOKEN = "admin-token-for-records"
METRICS_TOKEN = "metrics-token-for-prometheus"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
METADATA = {
    "callid": "rec-call-1",
    "virtual_number": "+911140000000",
    "customer_number": "+919876543210",
    "call_type": "inbound",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def one_call(url: str, metadata: dict[str, str]) -> None:
    async with StreamNodeClient(sample_rate=16000) as node:
        await node.connect(url)
        await node.send_metadata(metadata)
        await node.wait_for("playAudio", timeout=10)
        async with CallerLine(node, 16000) as line:
            await wait_until_quiet(node)
            line.say(read_wav_file(FIXTURES / "question.wav").pcm)
            end = await line.said(timeout=15)
            await node.wait_for("playAudio", after=end, timeout=10)
            await wait_until_quiet(node)
    assert node.problems == []


async def test_a_call_is_recorded_served_by_the_api_and_counted_in_metrics(
    fakes: FakeProviders, start_server: StartServer, tmp_path: Path
) -> None:
    register_secret(TOKEN, METRICS_TOKEN)
    server = await start_server(
        admin_api_token=TOKEN, metrics_token=METRICS_TOKEN, data_dir=str(tmp_path)
    )
    fakes.deepgram.utterances.append("What time do you open tomorrow?")
    fakes.openai.replies.append(llm.Text("We open at nine tomorrow."))
    await one_call(server.url, METADATA)
    ops: Operations = server.app.state.ops
    assert ops.records is not None and ops.store is not None
    deadline = time.monotonic() + 10
    while (rec := await ops.store.get("rec-call-1")) is None or rec.active:
        assert time.monotonic() < deadline, "the call's record was not written"
        await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        assert (await http.get("/api/calls")).status_code == 401
        listed = (await http.get("/api/calls", headers=HEADERS)).json()
        assert listed["total"] == 1 and listed["next_offset"] is None
        (summary,) = listed["calls"]
        assert summary["call_id"] == "rec-call-1" and "turns" not in summary
        assert summary["customer_number"] == "+91******3210"  # RECORDS_MASK_NUMBERS
        by_number = await http.get(
            "/api/calls", headers=HEADERS, params={"number": "+919876543210"}
        )
        assert by_number.json()["total"] == 1
        other = await http.get("/api/calls", headers=HEADERS, params={"end_reason": "transfer"})
        assert other.json()["total"] == 0
        bad = await http.get("/api/calls", headers=HEADERS, params={"end_reason": "nope"})
        assert bad.status_code == 422
        bad_time = await http.get("/api/calls", headers=HEADERS, params={"since": "someday"})
        assert bad_time.status_code == 422 and "since" in bad_time.text
        assert (await http.get("/api/calls/nobody", headers=HEADERS)).status_code == 404
        detail = (await http.get("/api/calls/rec-call-1", headers=HEADERS)).json()

        # Knowlarity's CDR arrives after the hang-up: matched by numbers and time.
        kpi: KpiService = server.app.state.kpi
        record = server.state.registry.get("rec-call-1")
        assert record is not None
        kpi.handle_event(
            CdrEvent.model_validate(
                {
                    "type": "CDR",
                    "uuid": "k-uuid-9",
                    "dispnumber": "+911140000000",
                    "caller_id": "+919876543210",
                    "resource_url": "https://kservices.knowlarity.com/rec/9.mp3",
                }
            ),
            received_at=time.time(),
        )
        deadline = time.monotonic() + 10
        while (rec := await ops.store.get("rec-call-1")) is None or not rec.recording_url:
            assert time.monotonic() < deadline, "the CDR did not reach the record"
            await asyncio.sleep(0.05)
        metrics = (await http.get("/metrics")).text
        # Through a proxy (not local), /metrics needs METRICS_TOKEN (or the admin token).
        relayed = {"X-Forwarded-For": "203.0.113.9"}
        assert (await http.get("/metrics", headers=relayed)).status_code == 404
        bearer = {**relayed, "Authorization": f"Bearer {METRICS_TOKEN}"}
        assert (await http.get("/metrics", headers=bearer)).status_code == 200

    assert detail["end_reason"] == "caller_hangup" and detail["turn_count"] == 1
    assert detail["providers"] == {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
    assert detail["sample_rate"] == 16000 and detail["greeting_ms"] > 0
    (turn,) = detail["turns"]
    assert turn["caller_text"] == "What time do you open tomorrow?"
    assert turn["heard_text"] == "We open at nine tomorrow." and turn["outcome"] == "answered"
    timings = turn["timings"]
    assert (
        timings["stt_final_ms"]
        <= timings["llm_first_token_ms"]
        <= timings["tts_first_audio_ms"]
        <= timings["first_audio_sent_ms"]
    )
    assert rec.recording_url == "https://kservices.knowlarity.com/rec/9.mp3"
    assert rec.cdr[0]["uuid"] == "k-uuid-9"

    got = samples(metrics)
    assert got[("voice_calls_started_total", ())] == 1
    assert got[("voice_calls_ended_total", (("reason", "caller_hangup"),))] == 1
    assert got[("voice_active_calls", ())] == 0
    assert got[("voice_turns_total", (("outcome", "answered"),))] == 1
    assert got[("voice_greeting_latency_seconds_count", ())] == 1
    assert got[("voice_reply_latency_seconds_count", ())] == 1
    assert got[("voice_stt_final_to_llm_first_token_seconds_count", ())] == 1
    assert got[("voice_llm_first_token_to_tts_first_audio_seconds_count", ())] == 1
    assert got[("voice_provider_requests_total", (("provider", "deepgram"), ("stage", "stt")))] == 1
    assert got[("voice_provider_requests_total", (("provider", "openai"), ("stage", "llm")))] == 1
    # The reply's one sentence; the greeting is cached at start-up (counted then).
    assert got[("voice_provider_requests_total", (("provider", "cartesia"), ("stage", "tts")))] >= 2
    assert got[("voice_event_loop_lag_seconds_count", ())] > 0
    assert got[("voice_records_written_total", ())] >= 2
    assert got[("voice_ready", ())] == 1
    assert got[("voice_process_resident_memory_bytes", ())] > 0
    for (name, labels), _ in got.items():  # low cardinality: no call ids, no numbers
        assert not any("rec-call" in v or "98765" in v for _, v in labels), name


async def test_worker_processes_sharing_a_metrics_directory_report_their_sum(
    fakes: FakeProviders, start_serve_process: StartServeProcess, tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR: what workers behind one port (--workers) rely on."""
    shared = tmp_path / "prom"
    shared.mkdir()
    # Two single-process servers stand in for two workers sharing the directory.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "RECORDS_ENABLED": "false", "WORKERS": "1"}
    first = await start_serve_process(**env)
    second = await start_serve_process(**env)
    for n, proc in enumerate((first, second)):
        fakes.deepgram.utterances.append("What time do you open tomorrow?")
        await one_call(proc.url, {**METADATA, "callid": f"mp-{n}"})
    async with httpx.AsyncClient(timeout=10) as http:
        deadline = time.monotonic() + 10
        while True:
            got = samples((await http.get(f"{first.http_url}/metrics")).text)
            if got.get(("voice_calls_ended_total", (("reason", "caller_hangup"),))) == 2:
                break
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        assert got[("voice_calls_started_total", ())] == 2
        assert got[("voice_active_calls", ())] == 0
        assert got[("voice_ready", ())] == 2  # two live processes, both ready
        second.proc.kill()  # gone without cleaning up: its live gauges must not linger
        await second.proc.wait()
        third = await start_serve_process(**env)  # a replacement worker forgets the dead
        got = samples((await http.get(f"{third.http_url}/metrics")).text)
    assert got[("voice_ready", ())] == 2
    assert got[("voice_calls_started_total", ())] == 2  # counters survive the worker


async def test_serve_with_two_workers_sums_metrics_and_shares_the_records_file(
    fakes: FakeProviders, start_serve_process: StartServeProcess, tmp_path: Path
) -> None:
    """``voice-agent serve --workers 2`` makes the shared metrics directory itself; both
    workers write one SQLite records file; any worker's /metrics counts every call."""
    server = await start_serve_process(workers=2, DATA_DIR=str(tmp_path / "data"))
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'records.db'}")
    servers: set[str] = set()
    calls = 0
    try:
        async with asyncio.timeout(120):
            # The kernel picks a worker per connection: call until both have served one.
            while len(servers) < 2:
                calls += 1
                call_id = f"workers-{calls}"
                async with StreamNodeClient(sample_rate=16000, keep_audio=False) as node:
                    await node.connect(server.url)
                    await node.send_metadata({"callid": call_id})
                    await node.wait_for("playAudio", timeout=10)
                while (record := await store.get(call_id)) is None or record.active:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                servers.add(record.server)
    finally:
        await store.aclose()
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(4):  # whichever worker answers, it counts every call
            got = samples((await http.get(f"{server.http_url}/metrics")).text)
            assert got[("voice_calls_started_total", ())] == calls
        async with asyncio.timeout(20):  # each worker samples its readiness every second
            while got[("voice_ready", ())] != 2:
                await asyncio.sleep(0.2)
                got = samples((await http.get(f"{server.http_url}/metrics")).text)
