"""inbound_messages.sender_key: one spelling per number, to look opt-out replies up by

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 15:00:00.000000

A send honours the opt-out replies ("TD") from the number its SMS goes to. Looked up by every
spelling of each number (13800000000, 8613800000000, +8613800000000...), a batch of 10,000
took 120 statements; by ``app.customers.fields.phone_key`` it takes 20. Existing replies get
their key here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
_SEPARATORS = str.maketrans("", "", " -().\u00a0\t")


def phone_key(phone: str) -> str:
    """app.customers.fields.phone_key as of this revision, frozen here: the keys written
    must be those the code of this revision looks up, whatever the function becomes."""
    text = phone.strip().translate(_SEPARATORS)
    international = text.startswith(("+", "00"))
    digits = text[1:] if text.startswith("+") else text[2:] if text.startswith("00") else text
    if not digits.isdigit():
        return phone.strip()
    if digits.startswith("86") and len(digits) == 13:
        return digits[2:]
    return f"+{digits}" if international else digits


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("sender_key", sa.String(length=320), nullable=True))
        batch.create_index("ix_inbound_messages_sender_key", ["sender_key"], unique=False)
    inbound = sa.table(
        "inbound_messages",
        sa.column("id", sa.String),
        sa.column("sender", sa.String),
        sa.column("sender_key", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(inbound.c.id, inbound.c.sender)).all()
    update = (
        sa.update(inbound)
        .where(inbound.c.id == sa.bindparam("b_id"))
        .values(sender_key=sa.bindparam("b_key"))
    )
    for start in range(0, len(rows), BATCH):
        batch_rows = rows[start : start + BATCH]
        conn.execute(update, [{"b_id": i, "b_key": phone_key(s)} for i, s in batch_rows])


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_index("ix_inbound_messages_sender_key")
        batch.drop_column("sender_key")
