"""The records database: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL (asyncpg).

One :class:`RecordStore` per process. Writes come from :mod:`records.writer` only (one
task, batches); reads from the API and the export. ``upgrade`` applies the Alembic
migrations, serialised across processes (a PostgreSQL advisory lock, a file lock for
SQLite) so that replicas starting together do not race to create the tables.
"""

from __future__ import annotations

import asyncio
import fcntl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Connection, Select, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from config.dburl import redacted_url
from config.logs import get_logger
from records.model import CallRecord
from records.schema import CallRow, row_values

log = get_logger("RECORDS")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x766F6963  # "voic": one advisory lock id for our migrations
SQLITE_BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CallQuery:
    """Filters for listing calls; times are epoch seconds, ``number`` as stored."""

    since: float | None = None
    until: float | None = None
    number: str | None = None
    end_reason: str | None = None
    limit: int = 50
    offset: int = 0


class RecordStore:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._sqlite_path: Path | None = None
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                self._sqlite_path = Path(parsed.database)
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)

    @property
    def display_url(self) -> str:
        return redacted_url(self.url)

    async def aclose(self) -> None:
        await self.engine.dispose()

    # -- schema -------------------------------------------------------------------------

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision`` (one process at a time)."""
        if self._sqlite_path is not None:
            lock_path = self._sqlite_path.with_name(self._sqlite_path.name + ".migrate-lock")
            with lock_path.open("a") as lock:
                await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
                try:
                    await self._upgrade(revision)
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        else:
            await self._upgrade(revision)

    async def _upgrade(self, revision: str) -> None:
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            await conn.run_sync(_run_alembic, revision)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    # -- writes (the writer task) --------------------------------------------------------

    async def upsert(self, records: Sequence[CallRecord]) -> None:
        """Insert or replace whole records, in one transaction."""
        if not records:
            return
        now = time.time()
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        async with self.engine.begin() as conn:
            for record in records:
                values = row_values(record, now)
                changed = {k: v for k, v in values.items() if k != "call_id"}
                statement = (
                    insert(CallRow)
                    .values(**values)
                    .on_conflict_do_update(index_elements=[CallRow.call_id], set_=changed)
                )
                await conn.execute(statement)

    async def attach_cdr(
        self, call_id: str, recording_url: str | None, cdr: list[dict[str, Any]]
    ) -> bool:
        """Set a finished call's konnect events (and recording URL); False if unknown."""
        values: dict[str, Any] = {"cdr": cdr, "updated_at": time.time()}
        if recording_url:
            values["recording_url"] = recording_url
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(CallRow).where(CallRow.call_id == call_id).values(**values)
            )
        return bool(result.rowcount)

    async def purge(self, before: float) -> int:
        """Delete calls that started before ``before`` (retention); how many went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(CallRow).where(CallRow.started_at < before))
        return int(result.rowcount or 0)

    # -- reads --------------------------------------------------------------------------

    async def get(self, call_id: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(CallRow).where(CallRow.call_id == call_id))).first()
        return None if row is None else _record(row._mapping)

    async def list(self, query: CallQuery) -> tuple[list[CallRecord], int]:
        """One page of calls, newest first, and how many match in all."""
        where = _conditions(query)
        page = (
            select(CallRow)
            .where(*where)
            .order_by(CallRow.started_at.desc(), CallRow.call_id.desc())
            .limit(query.limit)
            .offset(query.offset)
        )
        total = select(func.count()).select_from(CallRow).where(*where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).all()
            count = (await conn.execute(total)).scalar_one()
        return [_record(row._mapping) for row in rows], int(count)

    async def iter_since(
        self, since: float | None, until: float | None = None, batch: int = 500
    ) -> AsyncIterator[CallRecord]:
        """Every matching call, oldest first, a page at a time (keyset paging)."""
        after: tuple[float, str] | None = None
        base = _conditions(CallQuery(since=since, until=until))
        while True:
            statement: Select[Any] = select(CallRow).where(*base)
            if after is not None:
                started, call_id = after
                statement = statement.where(
                    or_(
                        CallRow.started_at > started,
                        and_(CallRow.started_at == started, CallRow.call_id > call_id),
                    )
                )
            statement = statement.order_by(CallRow.started_at, CallRow.call_id).limit(batch)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(statement)).all()
            for row in rows:
                record = _record(row._mapping)
                yield record
            if len(rows) < batch:
                return
            last = rows[-1]._mapping
            after = (last["started_at"], last["call_id"])


def _conditions(query: CallQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if query.since is not None:
        where.append(CallRow.started_at >= query.since)
    if query.until is not None:
        where.append(CallRow.started_at < query.until)
    if query.number:
        where.append(
            or_(CallRow.virtual_number == query.number, CallRow.customer_number == query.number)
        )
    if query.end_reason:
        where.append(CallRow.end_reason == query.end_reason)
    return where


def _record(mapping: Any) -> CallRecord:
    return CallRecord(**{name: mapping[name] for name in CallRecord.field_names()})


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run_alembic(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    """WAL lets the API read while the writer writes; busy_timeout waits out a lock."""
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()
