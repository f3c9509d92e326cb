"""idempotent_requests: the stored responses of creating POSTs made with an Idempotency-Key

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 18:00:00.000000

One row per (owner, route, key), written in the transaction that creates the resource; the
unique constraint is what makes concurrent duplicates create once (app/idempotency).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "idempotent_requests",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", JSON, nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotent_requests")),
        sa.UniqueConstraint(
            "owner", "route", "key", name=op.f("uq_idempotent_requests_owner_route_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("idempotent_requests")
