"""segments and strategies; the patch a message carries

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("rule", JSON, nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("key", name=op.f("uq_segments_key")),
    )
    op.create_table(
        "strategies",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("segment", sa.String(100), nullable=False),
        sa.Column("patch_templates", JSON, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("starts_at", app.db.UTCDateTime(), nullable=True),
        sa.Column("ends_at", app.db.UTCDateTime(), nullable=True),
        sa.Column("hours", JSON, nullable=True),
        sa.Column("channels", JSON, nullable=True),
        sa.Column("cap_max", sa.Integer(), nullable=True),
        sa.Column("cap_days", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategies")),
        sa.UniqueConstraint("key", name=op.f("uq_strategies_key")),
    )
    op.create_index(op.f("ix_strategies_scenario"), "strategies", ["scenario"])
    op.create_index(op.f("ix_strategies_segment"), "strategies", ["segment"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("patch", sa.String(100), nullable=True))
    op.create_index(
        "ix_messages_patched",
        "messages",
        ["customer_id", "created_at"],
        sqlite_where=sa.text("patch IS NOT NULL"),
        postgresql_where=sa.text("patch IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_patched", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("patch")
    op.drop_index(op.f("ix_strategies_segment"), table_name="strategies")
    op.drop_index(op.f("ix_strategies_scenario"), table_name="strategies")
    op.drop_table("strategies")
    op.drop_table("segments")
