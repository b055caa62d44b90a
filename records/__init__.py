"""Call records: one row per call, built from the call event feed, in a real database.

``accumulator`` turns a call's events into one :class:`~records.model.CallRecord`;
``writer`` queues finished (and started) records and writes them without ever blocking a
call; ``store`` is SQLAlchemy 2 async over SQLite (aiosqlite, the default) or PostgreSQL
(asyncpg); ``migrations`` are Alembic's; ``api`` and ``export`` read them back.
"""
