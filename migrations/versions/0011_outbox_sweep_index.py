"""the sweeper's index: outbox by (enqueued_at, due_at) instead of due_at alone

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 14:30:00.000000

The sweeper looks for outbox rows never enqueued and now due (scheduled sends), and for rows
enqueued long ago (jobs presumably lost). With only ix_outbox_due_at, both walked every due
row, i.e. the whole backlog, every two seconds: 71 ms per sweep with 219,000 messages
waiting, on SQLite on the event loop. On (enqueued_at, due_at) each is a range of what it
finds. Nothing else reads outbox by due_at, so the old index goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_enqueued_due", "outbox", ["enqueued_at", "due_at"])
    op.drop_index("ix_outbox_due_at", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_due_at", "outbox", ["due_at"])
    op.drop_index("ix_outbox_enqueued_due", table_name="outbox")
