"""messages.unpatched: a patched message's content without its patch, per channel

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 21:30:00.000000

A customer may opt out of marketing between a send's acceptance and its sending (a scheduled
bill reminder, a retry, a fallback): the worker then sends the transactional content
without the marketing patch decided at acceptance. NULL for messages without a patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("unpatched", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("unpatched")
