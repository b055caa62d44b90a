"""Alembic environment for the call records.

``voice-agent db upgrade`` (and the server at start-up) hands its open connection in
``config.attributes["connection"]``; run without one (``alembic -x url=...``) it opens
its own async engine from that URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from records.schema import Base

target_metadata = Base.metadata


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
    finally:
        await engine.dispose()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database: alembic -x url=sqlite+aiosqlite:///data/records.db")
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    shared = context.config.attributes.get("connection")
    if shared is not None:
        _migrate(shared)
    else:
        asyncio.run(_migrate_url(_url()))
