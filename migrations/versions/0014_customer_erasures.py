"""customer_erasures: the customers whose erasure is under way (PostgreSQL)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 21:00:00.000000

An erasure used to hold its customer's lock bucket (1/64 of customers, and so most groups of
sends) for as long as it ran. It now holds it only to write this marker; sends of the
customer see the marker and are refused until the erasure, which deletes it, is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_erasures",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("started_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_erasures")),
    )


def downgrade() -> None:
    op.drop_table("customer_erasures")
