"""indexes that keep the sweeper and the status list cheap with a large backlog

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 14:30:00.000000

- outbox (enqueued_at, due_at) replaces outbox (due_at). The sweeper looks for rows never
  enqueued and now due (scheduled sends) and for rows enqueued long ago (jobs presumably
  lost). On due_at alone both walked every due row, i.e. the whole backlog, every two
  seconds: 71 ms per sweep with 219,000 messages waiting, on SQLite on the event loop. Now
  each is a range of what it finds. Nothing else reads outbox by due_at.
- messages (status, id) replaces messages (status). `GET /v1/messages?status=queued` sorted
  every queued message to return the newest 50: 186 ms with 219,000 queued on SQLite.

On PostgreSQL the indexes are built and dropped CONCURRENTLY (migrations/online.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from migrations import online

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    online.create_index("ix_outbox_enqueued_due", "outbox", ["enqueued_at", "due_at"])
    online.drop_index("ix_outbox_due_at", "outbox")
    online.create_index("ix_messages_status_id", "messages", ["status", "id"])
    online.drop_index("ix_messages_status", "messages")


def downgrade() -> None:
    online.create_index("ix_messages_status", "messages", ["status"])
    online.drop_index("ix_messages_status_id", "messages")
    online.create_index("ix_outbox_due_at", "outbox", ["due_at"])
    online.drop_index("ix_outbox_enqueued_due", "outbox")
