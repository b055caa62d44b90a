"""``voice-agent kpi ...`` (run as ``python -m kpi``) against the fake on loopback:
exit codes, Knowlarity's JSON on stdout, messages on stderr, and ``events`` until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kpi.cli import register
from testkit.fake_kpi import AGENT_NUMBER, K_NUMBER, FakeKpi

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = "+919876543210"


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
async def fake() -> AsyncIterator[FakeKpi]:
    async with FakeKpi() as server:
        yield server


def environment(fake: FakeKpi, tmp: Path, **changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KNOWLARITY_", "ADMIN_"))}
    env.update(fake.settings_env())
    env["PYTHONPATH"] = str(ROOT)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


async def kpi(fake: FakeKpi, tmp: Path, *args: str, **env: str | None) -> Run:
    # cwd is an empty directory, so no developer's .env is read.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kpi",
        *args,
        cwd=tmp,
        env=environment(fake, tmp, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def test_makecall_exit_codes(fake: FakeKpi, tmp_path: Path) -> None:
    ok = await kpi(
        fake,
        tmp_path,
        "makecall",
        "--customer-number",
        CUSTOMER,
        "--whatsapp",
        "--call-permission-request",
    )
    assert ok.code == 0, ok.err
    assert json.loads(ok.out) == {
        "success": {"status": "success", "message": "Call successfully placed"}
    }
    assert fake.requests[0].json == {
        "k_number": K_NUMBER,
        "agent_number": AGENT_NUMBER,
        "customer_number": CUSTOMER,
        "channel": "Whatsapp",
        "call_permission_request": "true",
    }

    fake.dnd_numbers.add("+919876543299")
    refused = await kpi(fake, tmp_path, "makecall", "--customer-number", "+919876543299")
    assert refused.code == 1
    assert refused.out == ""
    assert "Do Not Call registry" in refused.err

    sent = len(fake.requests)
    bad, usage = await asyncio.gather(
        kpi(fake, tmp_path, "makecall", "--customer-number", "98765"),
        kpi(fake, tmp_path, "makecall"),  # argparse: a required option is missing
    )
    assert bad.code == 2
    assert "customer_number" in bad.err
    assert "E.164" in bad.err
    assert usage.code == 2
    assert len(fake.requests) == sent


async def test_otpcall(fake: FakeKpi, tmp_path: Path) -> None:
    run = await kpi(
        fake,
        tmp_path,
        "otpcall",
        "--ivr-id",
        "1000012345",
        "--customer-number",
        CUSTOMER,
        "--k-number",
        "+911140000009",
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)["success"]["status"] == "initiated"
    assert fake.requests[0].query_string == (
        "ivr_id=1000012345&k_number=%2B911140000009&customer_number=%2B919876543210"
    )


async def test_notifications_commands(fake: FakeKpi, tmp_path: Path) -> None:
    registered = await kpi(
        fake,
        tmp_path,
        "notifications",
        "register",
        "--knowlarity-number",
        K_NUMBER,
        "--knowlarity-number",
        "+911140000001",
    )
    assert registered.code == 0, registered.err
    assert json.loads(registered.out) == {"message": "Successfully registered."}
    disabled = await kpi(fake, tmp_path, "notifications", "disable")  # KNOWLARITY_NUMBER
    assert json.loads(disabled.out) == {"message": "Successfully disabled."}
    listing = await kpi(fake, tmp_path, "notifications", "list", "--enabled", "true")
    assert listing.code == 0, listing.err
    assert [o["k_number"] for o in json.loads(listing.out)["objects"]] == ["+911140000001"]
    methods = [(r.method, r.json) for r in fake.requests]
    assert methods == [
        ("POST", {"knowlarity_number": [K_NUMBER, "+911140000001"]}),
        ("PUT", {"knowlarity_number": K_NUMBER, "enable": "disable"}),
        ("GET", None),
    ]
    unknown = await kpi(
        fake, tmp_path, "notifications", "enable", "--knowlarity-number", "+911140000077"
    )
    assert unknown.code == 1
    assert "Client name, authorization or knowlarity number is wrong." in unknown.err


async def test_notifications_list_carries_no_credentials(fake: FakeKpi, tmp_path: Path) -> None:
    """The reference's registrations carry an integration's Knowlarity key and a CRM
    login (app_data); the CLI printed them. Now they are dropped on the way in."""
    fake.register(K_NUMBER)
    listing = await kpi(fake, tmp_path, "notifications", "list")
    assert listing.code == 0, listing.err
    (registration,) = json.loads(listing.out)["objects"]
    assert registration["k_number"] == K_NUMBER
    for word in ("k_api_key", "app_api_key", "app_data", "password", "k-api-", "crm-"):
        assert word not in listing.out


async def test_missing_settings_and_unreachable_server(fake: FakeKpi, tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    no_key, bad_channel, down = await asyncio.gather(
        kpi(fake, tmp_path, "makecall", "--customer-number", CUSTOMER, KNOWLARITY_API_KEY=None),
        kpi(fake, tmp_path, "events", KNOWLARITY_CHANNEL="Gold"),
        kpi(
            fake,
            tmp_path,
            "notifications",
            "list",
            KNOWLARITY_BASE_URL=f"http://127.0.0.1:{port}",
            KNOWLARITY_RETRIES="0",
        ),
    )
    assert no_key.code == 2
    assert "KNOWLARITY_API_KEY" in no_key.err
    assert bad_channel.code == 2
    assert "invalid settings" in bad_channel.err
    assert down.code == 1
    assert "could not connect to Knowlarity" in down.err
    assert fake.requests == []


async def test_events_prints_json_lines_until_interrupted(fake: FakeKpi, tmp_path: Path) -> None:
    first = {"event_type": "ORIGINATE", "uuid": "u-9", "k_api_key": "dropped"}
    second = {"type": "CDR", "uuid": "u-9", "Call_Type": "Outgoing", "call_duration": 12}
    fake.konnect.send_event(first, chunk_size=4)
    fake.konnect.drop()
    fake.konnect.send_event(second)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kpi",
        "events",
        cwd=tmp_path,
        env=environment(fake, tmp_path, LOG_LEVEL="DEBUG"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines = [json.loads(await process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    rest, err = await process.communicate()
    assert process.returncode == 0
    assert lines == [{"event_type": "ORIGINATE", "uuid": "u-9"}, second]
    assert rest == b""
    assert fake.sr_api_key.encode() not in err
    assert b"/update-stream/***/konnect" in err
    assert len(fake.konnect.connections) == 2


def test_register_adds_the_kpi_tree() -> None:
    parser = argparse.ArgumentParser(prog="voice-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["kpi", "makecall", "--customer-number", CUSTOMER, "--no-call-permission-request"]
    )
    assert callable(args.func)
    assert args.call_permission_request is False
    assert args.whatsapp is False
    args = parser.parse_args(["kpi", "notifications", "list", "--knowlarity-number", K_NUMBER])
    assert (args.action, args.knowlarity_number) == ("list", [K_NUMBER])
    assert callable(parser.parse_args(["kpi", "events"]).func)
    with pytest.raises(SystemExit) as usage:
        parser.parse_args(["kpi", "notifications", "delete"])
    assert usage.value.code == 2


def test_notification_option_misuse_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from kpi.cli import main

    code = main(
        [
            "notifications",
            "enable",
            "--knowlarity-number",
            K_NUMBER,
            "--knowlarity-number",
            K_NUMBER,
        ]
    )
    assert code == 2
    assert "one --knowlarity-number" in capsys.readouterr().err
    assert main(["notifications", "register", "--enabled", "true"]) == 2
