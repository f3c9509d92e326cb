"""early receipts: delivery receipts that came before the worker recorded the send

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 17:00:00.000000

A fast gateway can push a receipt within milliseconds, before the outcome naming the provider's
message id is written. Such a receipt waits here until the sweeper can apply it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OURS = sa.text("message_id IS NOT NULL")
THEIRS = sa.text("message_id IS NULL")


def upgrade() -> None:
    op.create_table(
        "early_receipts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_early_receipts")),
    )
    op.create_index(
        "ix_early_receipts_message_id",
        "early_receipts",
        ["message_id"],
        sqlite_where=OURS,
        postgresql_where=OURS,
    )
    op.create_index(
        "ix_early_receipts_provider_message_id",
        "early_receipts",
        ["provider", "provider_message_id"],
        sqlite_where=THEIRS,
        postgresql_where=THEIRS,
    )
    op.create_index("ix_early_receipts_received_at", "early_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_early_receipts_received_at", table_name="early_receipts")
    op.drop_index("ix_early_receipts_provider_message_id", table_name="early_receipts")
    op.drop_index("ix_early_receipts_message_id", table_name="early_receipts")
    op.drop_table("early_receipts")
