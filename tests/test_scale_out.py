"""Scale-out behind a real load balancer: Debian's nginx running deploy/nginx.conf in front
of three ``voice-agent serve`` processes, the provider fakes in their own process, and the
call records in a real PostgreSQL.

Knowlarity does not retry a refused call, and neither do these callers: zero failed calls
means nginx never hands a call to a process that will not take it (see deploy/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from audio.wav import read_wav_file
from records.store import RecordStore
from streamnode.caller_line import CallerLine
from streamnode.client import StreamNodeClient
from tests.caller import wait_until_quiet
from tests.cluster import (
    Cluster,
    Server,
    free_port,
    loopback_nginx_conf,
    start_fakes,
    start_nginx,
    stop,
)
from tests.conftest import FIXTURES, record_output
from tests.postgres import Postgres

QUESTION = read_wav_file(FIXTURES / "question.wav").pcm
DRAIN_SECONDS = "20"  # far longer than a test call: drained calls end on their own


@pytest.fixture(scope="module")
def cluster(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("scale")
    fakes, fake_env = start_fakes(base / "fakes.log")
    database = "scale_out"
    asyncio.run(postgres.create_database(database))
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    servers: list[Server] = []
    nginx = None
    try:
        for slot in range(3):
            metrics_dir = base / f"metrics-{slot}"  # one per process slot, kept over restarts
            metrics_dir.mkdir()
            env = {k: v for k, v in os.environ.items() if k in keep}
            env.update(fake_env)
            env.update(
                {
                    "DATABASE_URL": postgres.url(database, driver="postgresql"),
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    "DRAIN_SECONDS": DRAIN_SECONDS,
                    "WORKERS": "1",  # one process per slot, as deploy/ runs them
                    "GREETING": "Hi there.",
                    "TRUSTED_PROXIES": "127.0.0.1/32",
                    "VOICE_ALLOWED_IPS": "127.0.0.1/32",
                    "LOG_LEVEL": "INFO",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            server = Server(free_port(), env, base)
            server.start()
            servers.append(server)
        asyncio.run(_all_ready(servers))
        nginx_port = free_port()
        nginx = start_nginx(loopback_nginx_conf([s.port for s in servers], nginx_port, base), base)
        asyncio.run(_nginx_up(nginx_port))
        yield Cluster(servers, nginx_port, postgres.url(database), fakes, nginx)
    finally:
        if nginx is not None:
            stop(nginx, signal.SIGQUIT)
        for server in servers:
            server.kill()
            record_output(server.output())
        stop(fakes)


async def _all_ready(servers: list[Server]) -> None:
    await asyncio.gather(*(s.wait_ready() for s in servers))


async def _nginx_up(port: int) -> None:
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(15):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


@dataclass
class Outcome:
    call_id: str
    error: str | None = None


async def place_call(url: str, call_id: str) -> Outcome:
    """A Stream Node call: greeting, one question, the reply's first audio, hang up."""
    node = StreamNodeClient(sample_rate=16000, keep_audio=False)
    line = CallerLine(node, 16000)
    outcome = Outcome(call_id)
    try:
        await node.connect(url)
        await node.send_metadata(
            {
                "callid": call_id,
                "virtual_number": "+911140000000",
                "customer_number": "+919876500000",
                "call_type": "inbound",
            }
        )
        await node.wait_for("playAudio", timeout=20)
        line.start()
        await wait_until_quiet(node, timeout=20)
        line.say(QUESTION)
        end = await line.said(timeout=20)
        await node.wait_for("playAudio", after=end, timeout=20)
    except Exception as exc:  # any failure is this call's, reported with its id
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        await line.stop()
        with contextlib.suppress(Exception):
            await node.close()
    if outcome.error is None and node.closed_by_server:
        outcome.error = f"closed by the server ({node.close_code})"
    if outcome.error is None and node.problems:
        outcome.error = f"protocol problems: {node.problems}"
    return outcome


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(servers: list[Server]) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as http:
        return [(await http.get(f"{s.url}/metrics")).text for s in servers]


async def active_calls(server: Server) -> int:
    # A probe, not a measurement: a loaded 2-core box answered /health in over 2 s once.
    async with httpx.AsyncClient(timeout=10) as http:
        body = (await http.get(f"{server.url}/health")).json()
        calls: int = body["active_calls"]
        return calls


async def records_of(cluster: Cluster, call_ids: list[str]) -> dict[str, tuple[str, str]]:
    """call id -> (end reason, server) of every finished record found."""
    store = RecordStore(cluster.database_url)
    try:
        found = {}
        for call_id in call_ids:
            record = await store.get(call_id)
            if record is not None and record.end_reason is not None:
                found[call_id] = (record.end_reason, record.server)
        return found
    finally:
        await store.aclose()


async def wait_for_records(cluster: Cluster, call_ids: list[str]) -> dict[str, tuple[str, str]]:
    async with asyncio.timeout(30):
        while len(found := await records_of(cluster, call_ids)) < len(call_ids):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    return found


def server_name(server: Server) -> str:
    assert server.proc is not None
    return f"{os.uname().nodename}:{server.proc.pid}"


async def test_sixty_calls_across_three_processes_one_drained_mid_call(
    cluster: Cluster,
) -> None:
    servers = cluster.servers
    before = sum(metric_sum(t, "voice_calls_started_total") for t in await scrape(servers))
    target = servers[0]
    target_name = server_name(target)
    tasks: list[asyncio.Task[Outcome]] = []
    after_drain: list[str] = []

    def launch(n: int) -> str:
        call_id = f"scale-{n}"
        tasks.append(asyncio.create_task(place_call(cluster.voice_url, call_id)))
        return call_id

    n = 0
    for n in range(20):  # calls arrive every 150 ms, spread by least_conn
        launch(n)
        await asyncio.sleep(0.15)
    async with asyncio.timeout(20):
        while await active_calls(target) < 2:  # noqa: ASYNC110 (mid-call on several)
            await asyncio.sleep(0.05)
    target.terminate()
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(10):
        while (await http.get(f"{target.url}/ready")).status_code != 503:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    for n in range(20, 60):  # the target is draining: every one of these goes elsewhere
        after_drain.append(launch(n))
        await asyncio.sleep(0.15)
    outcomes = await asyncio.gather(*tasks)
    assert [o for o in outcomes if o.error] == [], "failed calls"
    assert await target.wait_exit(40) == 0, target.output()[-3000:]
    assert "Drain complete" in target.output()

    call_ids = [o.call_id for o in outcomes]
    records = await wait_for_records(cluster, call_ids)
    assert {reason for reason, _ in records.values()} == {"caller_hangup"}
    by_target = [c for c, (_, server) in records.items() if server == target_name]
    assert len(by_target) >= 2  # its calls finished normally during the drain
    assert not set(by_target) & set(after_drain)  # no new call reached it after SIGTERM
    assert len({server for _, server in records.values()}) == 3

    target.start()  # the slot comes back (a deploy); its counters live in its metrics dir
    await target.wait_ready()
    texts = await scrape(servers)
    started = sum(metric_sum(t, "voice_calls_started_total") for t in texts) - before
    assert started == 60
    ended = sum(metric_sum(t, "voice_calls_ended_total", reason="caller_hangup") for t in texts)
    assert ended >= 60 and all(metric_sum(t, "voice_active_calls") == 0 for t in texts)


async def test_a_rolling_restart_under_steady_arrivals_loses_no_call(cluster: Cluster) -> None:
    servers = cluster.servers
    stop_arrivals = asyncio.Event()
    tasks: list[asyncio.Task[Outcome]] = []

    async def arrivals() -> None:
        n = 0
        while not stop_arrivals.is_set():
            tasks.append(
                asyncio.create_task(place_call(cluster.voice_url, f"roll-{time.time_ns()}-{n}"))
            )
            n += 1
            await asyncio.sleep(0.3)

    feeder = asyncio.create_task(arrivals())
    await asyncio.sleep(2.0)
    for server in servers:  # one at a time: drain, exit, start again, wait until ready
        async with asyncio.timeout(20):
            while server.proc is not None and await active_calls(server) < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        server.terminate()
        assert await server.wait_exit(40) == 0, server.output()[-3000:]
        server.start()
        await server.wait_ready()
        # As a deploy must (deploy/README.md): the next process stops only once nginx
        # sends calls to this one again.
        async with asyncio.timeout(30):
            while await active_calls(server) < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    stop_arrivals.set()
    await feeder
    outcomes = await asyncio.gather(*tasks)
    assert len(outcomes) >= 20
    assert [o for o in outcomes if o.error] == [], "failed calls"
    records = await wait_for_records(cluster, [o.call_id for o in outcomes])
    assert {reason for reason, _ in records.values()} == {"caller_hangup"}
