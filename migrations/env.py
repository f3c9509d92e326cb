"""Alembic environment: async engines, batch mode for SQLite, shared connections for tests."""

from __future__ import annotations

import asyncio
import logging
import time

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from app.db import create_engine
from app.models import Base
from app.settings import get_settings

config = context.config
log = logging.getLogger("icc.migrate")
target_metadata = Base.metadata


# Replicas starting together on one PostgreSQL database migrate one after the other: a
# session lock, held across the migrations' own transactions (one per migration, since
# migrations/online.py builds indexes outside any transaction).
MIGRATION_LOCK_ID = 0x1CC0001
LOCK_POLL_SECONDS = 0.25


def _lock(connection: Connection) -> None:
    """Take the lock, polling: a session waiting inside a statement keeps a snapshot, and
    CREATE INDEX CONCURRENTLY in the session holding the lock would wait for it (deadlock)."""
    waiting = False
    while True:
        taken = connection.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({MIGRATION_LOCK_ID})"
        ).scalar()
        connection.commit()
        if taken:
            return
        if not waiting:
            log.info("waiting for another process to finish migrating this database")
            waiting = True
        time.sleep(LOCK_POLL_SECONDS)


def _unlock(connection: Connection) -> None:
    try:
        connection.rollback()  # a failed migration's transaction, if any
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})")
        connection.commit()
    except SQLAlchemyError:  # the lock goes with the connection; keep the first error
        log.warning("could not release the migration lock", exc_info=True)


def _run(connection: Connection) -> None:
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        _lock(connection)
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if postgres and not connection.invalidated:
            _unlock(connection)


async def _run_async(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.attributes.get("database_url") or get_settings().database_url
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    context.configure(url=get_settings().database_url, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
