"""``voice-agent db upgrade`` and ``voice-agent calls export`` on a real SQLite file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import get_settings
from records.model import CallRecord
from records.store import RecordStore
from server.cli import main

T0 = 1_790_000_000.0


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def add_calls(db: Path, records: list[CallRecord]) -> None:
    async def run() -> None:
        store = RecordStore(f"sqlite+aiosqlite:///{db}")
        await store.upsert(records)
        await store.aclose()

    asyncio.run(run())


def test_upgrade_then_export_as_jsonl_and_csv(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["db", "upgrade"]) == 0
    assert "revision 0001" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == "0001"
    turns = [{"turn": 1, "caller_text": 'Say "hi", please', "heard_text": "Hi, there"}]
    add_calls(
        data_dir / "records.db",
        [
            CallRecord(call_id="old", started_at=T0 - 86_400),
            CallRecord(call_id="a", started_at=T0, end_reason="transfer", turns=turns),
            CallRecord(call_id="b", started_at=T0 + 60, end_reason="caller_hangup"),
        ],
    )
    assert main(["calls", "export", "--since", str(T0)]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [x["call_id"] for x in lines] == ["a", "b"] and "exported 2 calls" in out.err
    assert lines[0]["turns"] == turns and lines[0]["started"].startswith("2026-09-21")

    target = tmp_path / "calls.csv"
    args = ["calls", "export", "--since", "2026-09-21", "--until", str(T0 + 1)]
    assert main([*args, "--format", "csv", "-o", str(target)]) == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["call_id"] for r in rows] == ["a"]
    assert json.loads(rows[0]["turns"]) == turns and rows[0]["end_reason"] == "transfer"


def test_export_refuses_a_time_it_cannot_read(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "export", "--since", "last tuesday"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_upgrade_refuses_an_unknown_database_url(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:topsecret-pw@h/db")
    get_settings.cache_clear()
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "'mysql' is not supported" in err and "topsecret-pw" not in err
