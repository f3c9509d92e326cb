"""Index changes that do not stop the platform on PostgreSQL.

A plain CREATE INDEX holds a lock that blocks every insert and update of its table until
the index is built, and ``icc serve`` migrates at start: on a bank's messages table that is
minutes without accepting or sending. On PostgreSQL these run CONCURRENTLY, outside the
migration's transaction (alembic's autocommit block; env.py keeps one migration per
transaction and holds its advisory lock across them). A build that failed half-way leaves
an invalid index behind: it is dropped before building again. SQLite builds in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import op
from sqlalchemy import TextClause


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def create_index(name: str, table: str, columns: Sequence[str | TextClause], **kw: Any) -> None:
    if not _postgres():
        op.create_index(name, table, list(columns), **kw)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(name, table, list(columns), postgresql_concurrently=True, **kw)


def drop_index(name: str, table: str) -> None:
    if not _postgres():
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
