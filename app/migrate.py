"""Run Alembic migrations from code (``icc migrate``, ``icc serve``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def ensure_sqlite_dir(database_url: str) -> None:
    """Create the folder of a SQLite file (the embedded default lives under ./var/)."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def upgrade(database_url: str) -> None:
    """Bring the schema to the newest revision. Must be called outside a running event loop."""
    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), "head")
