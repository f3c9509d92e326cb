"""two indexes of messages that every send updated for nothing

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:00:00.000000

On PostgreSQL the worker's claim and its outcome are UPDATEs that change indexed columns
(status), so neither can be HOT: each adds an entry to every index of messages, and so does
the insert at accept.

- ix_messages_provider_message_id gives way to ix_messages_sent_provider_id, partial
  (provider_message_id IS NOT NULL): receipts look sent messages up by the provider's id; a
  queued or sending message has none and no longer gets an entry. (A new name, so that it
  is built beside the old one and receipts find an index all along.)
- ix_messages_created_at is dropped: its one reader, the message list's ``since``, now scans
  a range of ids, which are time-sortable (app/ids.py), and keeps created_at as the exact
  filter.

On PostgreSQL the indexes are built and dropped CONCURRENTLY (migrations/online.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from migrations import online

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SENT = sa.text("provider_message_id IS NOT NULL")


def upgrade() -> None:
    online.create_index(
        "ix_messages_sent_provider_id",
        "messages",
        ["provider_message_id"],
        sqlite_where=SENT,
        postgresql_where=SENT,
    )
    online.drop_index("ix_messages_provider_message_id", "messages")
    online.drop_index("ix_messages_created_at", "messages")


def downgrade() -> None:
    online.create_index("ix_messages_created_at", "messages", ["created_at"])
    online.create_index("ix_messages_provider_message_id", "messages", ["provider_message_id"])
    online.drop_index("ix_messages_sent_provider_id", "messages")
