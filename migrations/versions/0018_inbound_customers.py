"""inbound_customers: the customers a reply came from, when it came

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 02:00:00.000000

An erasure took a customer's replies by the numbers and openids they had at the erasure (and
those their messages went to): replies from a number they had before, never sent to, stayed
with the number and the text, and those from a number another customer had when they came
went with the erasure. A reply now names the customers who had its sender's number or
openid when it came. Replies stored before have no links and are found by number as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_customers",
        sa.Column("inbound_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_id"],
            ["inbound_messages.id"],
            name=op.f("fk_inbound_customers_inbound_id_inbound_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbound_id", "customer_id", name=op.f("pk_inbound_customers")),
    )
    op.create_index(op.f("ix_inbound_customers_customer_id"), "inbound_customers", ["customer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_inbound_customers_customer_id"), "inbound_customers")
    op.drop_table("inbound_customers")
