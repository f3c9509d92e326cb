"""template versions

Each template keeps its identity (key, channel), a name, a description and its declared
variables; its content moves to ``template_versions`` (draft or published). Every existing
template becomes version 1, published, declaring the variables of the scenario that uses it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.db
from app.ids import new_id

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# Lightweight tables for moving the data (the models may change after this revision).
templates_old = sa.table(
    "templates",
    sa.column("id", sa.String),
    sa.column("key", sa.String),
    sa.column("subject", sa.Text),
    sa.column("body", sa.Text),
    sa.column("options", JSON),
    sa.column("created_at", app.db.UTCDateTime()),
    sa.column("updated_at", app.db.UTCDateTime()),
)
templates_new = sa.table(
    "templates",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("variables", JSON),
    sa.column("current_version", sa.Integer),
    sa.column("latest_version", sa.Integer),
)
scenarios = sa.table(
    "scenarios",
    sa.column("required_variables", JSON),
    sa.column("templates", JSON),
)
versions = sa.table(
    "template_versions",
    sa.column("id", sa.String),
    sa.column("template_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("status", sa.String),
    sa.column("variables", JSON),
    sa.column("subject", sa.Text),
    sa.column("body", sa.Text),
    sa.column("options", JSON),
    sa.column("created_at", app.db.UTCDateTime()),
    sa.column("updated_at", app.db.UTCDateTime()),
    sa.column("published_at", app.db.UTCDateTime()),
)


def _declared_variables(connection: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    """Template key -> the variables of the scenario that uses it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for required, keys in connection.execute(
        sa.select(scenarios.c.required_variables, scenarios.c.templates)
    ):
        for key in (keys or {}).values():
            out.setdefault(key, list(required or []))
    return out


def upgrade() -> None:
    connection = op.get_bind()
    # Read the content first: on SQLite the batch below recreates the table.
    old = connection.execute(sa.select(templates_old)).mappings().all()
    declared = _declared_variables(connection)

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("variables", JSON, nullable=True))
        batch_op.add_column(sa.Column("current_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("latest_version", sa.Integer(), nullable=True))
        batch_op.drop_column("options")
        batch_op.drop_column("body")
        batch_op.drop_column("subject")

    for row in old:
        connection.execute(
            sa.update(templates_new)
            .where(templates_new.c.id == row["id"])
            .values(
                name=row["key"],
                variables=declared.get(row["key"], []),
                current_version=1,
                latest_version=1,
            )
        )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=200), nullable=False)
        batch_op.alter_column("variables", existing_type=JSON, nullable=False)
        batch_op.alter_column("latest_version", existing_type=sa.Integer(), nullable=False)

    # Created last: a later batch on SQLite (drop and recreate ``templates``) would cascade.
    op.create_table(
        "template_versions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("template_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("variables", JSON, nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
        sa.UniqueConstraint(
            "template_id", "version", name=op.f("uq_template_versions_template_id_version")
        ),
    )

    now = datetime.now(UTC)
    for row in old:
        connection.execute(
            sa.insert(versions).values(
                id=new_id("tpv"),
                template_id=row["id"],
                version=1,
                status="published",
                variables=declared.get(row["key"], []),
                subject=row["subject"],
                body=row["body"],
                options=row["options"] or {},
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                published_at=now,
            )
        )


def downgrade() -> None:
    connection = op.get_bind()
    # The current version (or else the newest) of each template becomes its content again.
    current: dict[str, Any] = {}
    for row in connection.execute(
        sa.select(versions).order_by(versions.c.template_id, versions.c.version)
    ).mappings():
        if row["status"] == "published" or row["template_id"] not in current:
            current[row["template_id"]] = row
    op.drop_table("template_versions")

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("options", JSON, nullable=False, server_default="{}"))
        batch_op.drop_column("latest_version")
        batch_op.drop_column("current_version")
        batch_op.drop_column("variables")
        batch_op.drop_column("description")
        batch_op.drop_column("name")

    for template_id, row in current.items():
        connection.execute(
            sa.update(templates_old)
            .where(templates_old.c.id == template_id)
            .values(subject=row["subject"], body=row["body"], options=row["options"] or {})
        )
    connection.execute(
        sa.update(templates_old).where(templates_old.c.body.is_(None)).values(body="")
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.alter_column("body", existing_type=sa.Text(), nullable=False)
