"""``voice-agent db upgrade|current`` and ``voice-agent calls export``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from records.store import RecordStore

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    db = sub.add_parser("db", help="the call records database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply the schema migrations (Alembic)")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=_upgrade)
    current = db_sub.add_parser("current", help="print the schema revision in use")
    current.set_defaults(func=_current)

    calls = sub.add_parser("calls", help="call records")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    exp = calls_sub.add_parser(
        "export",
        help="write call records as JSON Lines or CSV",
        description="Calls that started in [--since, --until), oldest first. Times: "
        "2026-12-01, 2026-12-01T09:30:00+05:30 (UTC if no zone), epoch seconds, or an age "
        "such as 7d, 24h, 30m.",
    )
    exp.add_argument("--since", required=True, help="e.g. 2026-12-01 or 7d")
    exp.add_argument("--until", help="default: now")
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    exp.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    exp.set_defaults(func=_export)


def _store() -> RecordStore:
    from config import get_settings
    from records.store import RecordStore

    return RecordStore(get_settings().records.url)


def _upgrade(args: argparse.Namespace) -> int:
    async def run() -> str | None:
        store = _store()
        try:
            await store.upgrade(args.revision)
            return await store.current_revision()
        finally:
            await store.aclose()

    try:
        revision = asyncio.run(run())
    except ValueError as exc:  # a DATABASE_URL we cannot use
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: could not migrate the records database: {exc}", file=sys.stderr)
        return 1
    print(f"records database at revision {revision}")
    return 0


def _current(args: argparse.Namespace) -> int:
    async def run() -> str | None:
        store = _store()
        try:
            return await store.current_revision()
        finally:
            await store.aclose()

    try:
        print(asyncio.run(run()) or "none (run: voice-agent db upgrade)")
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from records.export import export
    from records.model import parse_when

    now = time.time()
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run(out: TextIO) -> int:
        store = _store()
        try:
            return await export(store, out, since=since, until=until, fmt=args.format)
        finally:
            await store.aclose()

    try:
        if args.output is None:
            count = asyncio.run(run(sys.stdout))
        else:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                count = asyncio.run(run(out))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: could not read the records database: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count} calls", file=sys.stderr)
    return 0
