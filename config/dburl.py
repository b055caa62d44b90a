"""DATABASE_URL in the forms people paste, turned into the async driver URL SQLAlchemy needs.

``postgres://`` and ``postgresql://`` (Heroku, docker-compose, psql) become
``postgresql+asyncpg://``; ``sqlite:///path`` becomes ``sqlite+aiosqlite:///path``; no URL
at all means an SQLite file under the data directory. Plain string work, no SQLAlchemy,
so settings stay cheap to import.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

SQLITE_FILE = "records.db"

_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def async_database_url(raw: str | None, data_dir: str) -> str:
    """The SQLAlchemy async URL for ``raw`` (DATABASE_URL), or the default SQLite file."""
    if not raw:
        path = (Path(data_dir) / SQLITE_FILE).resolve()
        return f"sqlite+aiosqlite:///{path}"
    scheme, sep, rest = raw.strip().partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:pass@host/db")
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        known = "postgresql://, postgres://, sqlite:///"
        raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported (use {known})")
    return f"{driver}://{rest}"


def url_password(raw: str) -> str | None:
    """The password inside a database URL (so log redaction can mask it), if any."""
    try:
        password = urlsplit(raw.strip()).password
    except ValueError:
        return None
    return unquote(password) if password else None


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for log lines."""
    password = url_password(url)
    if not password:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
