"""campaigns.release_from, release_at and cancelled: a throttled campaign's quiet-hours backlog

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 22:40:00.000000

A throttled campaign running in its customers' quiet hours schedules their messages for the
end of the window. ``release_from`` and ``release_at`` say from when that backlog is released
and when its next message may go, so that it goes at the campaign's rate instead of all at
once when the window ends (and the runner makes no new messages while it is released).
``cancelled`` counts the messages a cancel stopped before they went.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("release_from", app.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("release_at", app.db.UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("cancelled", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("cancelled")
        batch.drop_column("release_at")
        batch.drop_column("release_from")
