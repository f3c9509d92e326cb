"""a campaign's messages, newest first: a partial index for the message list's campaign filter

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 19:00:00.000000

`GET /v1/messages?campaign_id=` reads a page of a campaign's messages newest first. Without an
index, a campaign whose messages are not among the newest costs a scan of the whole table
(PostgreSQL chose a parallel sequential scan). Partial: messages outside campaigns pay nothing.
(The experiment filter is served by ix_messages_experiment or the primary key.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("campaign_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_messages_campaign",
        "messages",
        ["campaign_id", "id"],
        sqlite_where=WHERE,
        postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_campaign", table_name="messages")
