"""experiments, assignments, campaigns, tracked links, conversions; a message's experiment,
variant, campaign, first open and first click

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _times(*names: str, nullable: bool = True) -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column(n, app.db.UTCDateTime(), nullable=nullable) for n in names]


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("segment", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(100), nullable=True),
        sa.Column("variants", JSON, nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("coverage", sa.Float(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=True),
        sa.Column("salt", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("conversion_event", sa.String(64), nullable=True),
        sa.Column("attribution_hours", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("min_sample", sa.Integer(), nullable=False),
        sa.Column("target_lift", sa.Float(), nullable=False),
        sa.Column("auto_winner", sa.Boolean(), nullable=False),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("winner_decision", JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        *_times("started_at", "stopped_at", "completed_at"),
        *_times("created_at", "updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("key", name=op.f("uq_experiments_key")),
    )
    op.create_index(op.f("ix_experiments_strategy"), "experiments", ["strategy"])
    op.create_index(op.f("ix_experiments_status"), "experiments", ["status"])
    op.create_table(
        "experiment_assignments",
        sa.Column("experiment_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("assigned_at", app.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_assignments_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "customer_id", name=op.f("pk_experiment_assignments")
        ),
    )
    op.create_index(
        "ix_experiment_assignments_variant", "experiment_assignments", ["experiment_id", "variant"]
    )
    op.create_index(
        "ix_experiment_assignments_customer",
        "experiment_assignments",
        ["customer_id", "assigned_at"],
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("template", sa.String(100), nullable=True),
        sa.Column("segment", sa.String(100), nullable=False),
        sa.Column("experiment", sa.String(100), nullable=True),
        sa.Column("variables", JSON, nullable=False),
        sa.Column("sample_fraction", sa.Float(), nullable=True),
        sa.Column("starts_at", app.db.UTCDateTime(), nullable=True),
        sa.Column("rate_per_second", sa.Float(), nullable=True),
        sa.Column("respect_quiet_hours", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cursor", sa.String(64), nullable=True),
        sa.Column("audience", sa.Integer(), nullable=True),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("held_out", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        *_times("started_at", "finished_at"),
        *_times("created_at", "updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("key", name=op.f("uq_campaigns_key")),
    )
    op.create_index(op.f("ix_campaigns_experiment"), "campaigns", ["experiment"])
    op.create_index(op.f("ix_campaigns_status"), "campaigns", ["status"])
    op.create_table(
        "tracked_links",
        sa.Column("token", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_tracked_links_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_tracked_links")),
    )
    op.create_index(op.f("ix_tracked_links_message_id"), "tracked_links", ["message_id"])
    op.create_table(
        "conversions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("value", app.db.Money(), nullable=True),
        sa.Column("occurred_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=True),
        sa.Column("experiment_id", sa.String(40), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint(
            "owner", "idempotency_key", name=op.f("uq_conversions_owner_idempotency_key")
        ),
    )
    op.create_index(
        "ix_conversions_experiment_variant", "conversions", ["experiment_id", "variant"]
    )
    op.create_index(
        "ix_conversions_customer_occurred", "conversions", ["customer_id", "occurred_at"]
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("experiment_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(64), nullable=True))
        batch.add_column(sa.Column("campaign_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("opened_at", app.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("clicked_at", app.db.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_messages_experiment",
        "messages",
        ["experiment_id", "variant"],
        sqlite_where=sa.text("experiment_id IS NOT NULL"),
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_experiment", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        for column in ("clicked_at", "opened_at", "campaign_id", "variant", "experiment_id"):
            batch.drop_column(column)
    op.drop_table("conversions")
    op.drop_table("tracked_links")
    op.drop_table("campaigns")
    op.drop_table("experiment_assignments")
    op.drop_table("experiments")
