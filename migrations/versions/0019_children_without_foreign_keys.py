"""message_events and outbox without foreign keys to messages

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 03:20:00.000000

Every event and outbox row is written by a statement that has its message in hand: in the
transaction that inserts the message, or joined to the message it updates (the worker's
claim and outcomes, receipts, tracking). Messages are never deleted (an erasure scrubs them
in place), so the ON DELETE CASCADE never ran. The checks did run, once per row inserted:
about a fifth of PostgreSQL's CPU for the worker's claims and outcomes (three events a
message), and, for a batch of 10,000, some 130 ms of its COPY into the outbox. A job that
deletes messages (retention) deletes their events and outbox rows with them.

On SQLite the two tables are rebuilt (batch mode): both are children only, nothing refers
to them, and the rebuild leaves messages untouched. The downgrade adds the keys back; it
fails on rows whose message was deleted meanwhile, which must be deleted first.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILDREN = ("message_events", "outbox")
# SQLite's batch mode reflects the table it rebuilds; without this it would reflect messages
# too (the key's target), which has an index on an expression reflection cannot read
_REFLECT = {"resolve_fks": False}


def _name(table: str) -> str:
    return f"fk_{table}_message_id_messages"


def upgrade() -> None:
    for table in CHILDREN:
        with op.batch_alter_table(table, reflect_kwargs=_REFLECT) as batch:
            batch.drop_constraint(_name(table), type_="foreignkey")


def downgrade() -> None:
    for table in CHILDREN:
        with op.batch_alter_table(table, reflect_kwargs=_REFLECT) as batch:
            batch.create_foreign_key(
                _name(table), "messages", ["message_id"], ["id"], ondelete="CASCADE"
            )
