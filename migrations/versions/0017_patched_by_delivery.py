"""ix_messages_patched_reach: patched messages by when they reach the customer

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 23:00:00.000000

Frequency caps count a customer's patches by when they reach the customer, coalesce(send_at,
created_at): a patch scheduled for next week counts next week, not when it was accepted.
ix_messages_patched (customer_id, created_at) gives way to ix_messages_patched_reach
(customer_id, coalesce(send_at, created_at)), the expression the caps' statements compare
(a new name, so that it is built beside the old one and caps find an index all along).

On PostgreSQL the indexes are built and dropped CONCURRENTLY (migrations/online.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from migrations import online

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PATCHED = sa.text("patch IS NOT NULL")


def upgrade() -> None:
    online.create_index(
        "ix_messages_patched_reach",
        "messages",
        ["customer_id", sa.text("coalesce(send_at, created_at)")],
        sqlite_where=PATCHED,
        postgresql_where=PATCHED,
    )
    online.drop_index("ix_messages_patched", "messages")


def downgrade() -> None:
    online.create_index(
        "ix_messages_patched",
        "messages",
        ["customer_id", "created_at"],
        sqlite_where=PATCHED,
        postgresql_where=PATCHED,
    )
    online.drop_index("ix_messages_patched_reach", "messages")
