"""The calls table.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("server", sa.String(128), nullable=False),
        sa.Column("virtual_number", sa.String(32), nullable=False),
        sa.Column("customer_number", sa.String(32), nullable=False),
        sa.Column("call_type", sa.String(32), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("providers", _JSON, nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("end_detail", sa.Text(), nullable=False),
        sa.Column("transferred_to", sa.String(32), nullable=True),
        sa.Column("greeting_ms", sa.Float(), nullable=True),
        sa.Column("turn_count", sa.Integer(), nullable=False),
        sa.Column("barge_in_count", sa.Integer(), nullable=False),
        sa.Column("turns", _JSON, nullable=False),
        sa.Column("agent_lines", _JSON, nullable=False),
        sa.Column("barge_ins", _JSON, nullable=False),
        sa.Column("provider_errors", _JSON, nullable=False),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column("cdr", _JSON, nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_end_reason_started_at", "calls", ["end_reason", "started_at"])
    op.create_index("ix_calls_virtual_number", "calls", ["virtual_number"])
    op.create_index("ix_calls_customer_number", "calls", ["customer_number"])


def downgrade() -> None:
    op.drop_table("calls")
