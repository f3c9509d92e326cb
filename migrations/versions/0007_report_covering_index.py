"""the experiment index of messages covers the report's aggregation

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 18:00:00.000000

A report reduces an experiment's messages to one row per (variant, customer). With the
customer in the key and the stage times and cost included, PostgreSQL reads that from the
index alone, in order, instead of sorting the experiment's messages (on disk at 1,000,000).
It replaces the narrower (experiment_id, variant) index, so messages carry no extra index;
it stays partial, so messages outside experiments pay nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("experiment_id IS NOT NULL")


def _create(columns: list[str], include: list[str]) -> None:
    op.create_index(
        "ix_messages_experiment",
        "messages",
        columns,
        sqlite_where=WHERE,
        postgresql_where=WHERE,
        postgresql_include=include,
    )


def upgrade() -> None:
    op.drop_index("ix_messages_experiment", table_name="messages")
    _create(
        ["experiment_id", "variant", "customer_id"],
        ["sent_at", "delivered_at", "clicked_at", "cost"],
    )


def downgrade() -> None:
    op.drop_index("ix_messages_experiment", table_name="messages")
    _create(["experiment_id", "variant"], [])
