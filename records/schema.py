"""The ``calls`` table (SQLAlchemy 2 declarative). Changes need an Alembic migration.

Times are epoch seconds (a float): the same on SQLite and PostgreSQL, no time-zone traps,
and range filters are plain comparisons. Nested parts (turns, errors, CDR) are JSON.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from records.model import CallRecord

Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class CallRow(Base):
    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    server: Mapped[str] = mapped_column(String(128), default="")
    virtual_number: Mapped[str] = mapped_column(String(32), default="")
    customer_number: Mapped[str] = mapped_column(String(32), default="")
    call_type: Mapped[str] = mapped_column(String(32), default="")
    sample_rate: Mapped[int] = mapped_column(Integer, default=0)
    language: Mapped[str] = mapped_column(String(32), default="")
    providers: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    end_detail: Mapped[str] = mapped_column(Text, default="")
    transferred_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    greeting_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    turn_count: Mapped[int] = mapped_column(Integer, default=0)
    barge_in_count: Mapped[int] = mapped_column(Integer, default=0)
    turns: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    agent_lines: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    barge_ins: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    provider_errors: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    recording_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    cdr: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_calls_started_at", "started_at"),
        Index("ix_calls_end_reason_started_at", "end_reason", "started_at"),
        Index("ix_calls_virtual_number", "virtual_number"),
        Index("ix_calls_customer_number", "customer_number"),
    )

    def to_record(self) -> CallRecord:
        return CallRecord(**{name: getattr(self, name) for name in CallRecord.field_names()})


def row_values(record: CallRecord, now: float) -> dict[str, Any]:
    """Column values for an insert or update of ``record``."""
    values = {name: getattr(record, name) for name in CallRecord.field_names()}
    values["updated_at"] = now
    return values
