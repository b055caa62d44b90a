"""A real PostgreSQL server for the tests: Debian's binaries, a throw-away cluster.

``initdb`` + ``pg_ctl`` in a temporary directory, on a free loopback port, trust auth,
durability off (the data dies with the run). PostgreSQL refuses to run as root, and CI
runs as root: then every PostgreSQL command runs as the ``postgres`` system user that
Debian's package creates (``runuser -u postgres``), in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=200"
)


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str = "postgres"

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def execute(self, database: str, sql: str) -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=self.user, database=database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def bin_dir() -> Path:
    """Where Debian put the server binaries (the newest installed major version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(initdb).resolve().parent


@contextlib.contextmanager
def running_postgres(port: int) -> Iterator[Postgres]:
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    directory = Path(tempfile.mkdtemp(prefix="voice-pg-"))
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    data = directory / "data"
    bins = bin_dir()

    def run(*argv: str) -> None:
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bins / "initdb"),
            *("-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"),
        )
        run(
            str(bins / "pg_ctl"),
            *("-D", str(data), "-l", str(directory / "server.log"), "-w", "-t", "60"),
            *("-o", f"-p {port} -k {directory} {SERVER_OPTIONS}", "start"),
        )
        yield Postgres(port=port)
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            run(str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)
