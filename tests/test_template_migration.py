"""Data migrations on SQLite and PostgreSQL. 0003: existing templates become published
version 1, declaring their scenario's variables; the downgrade puts the content back. 0012:
existing SMS replies get their number's key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from app.customers.fields import phone_key
from app.db import create_engine
from app.migrate import alembic_config, upgrade

NOW = "2026-01-01 00:00:00"
LEGACY = [
    "INSERT INTO templates (id, key, channel, subject, body, options, created_at, updated_at) "
    f"VALUES ('tpl_1', 'salary.sms', 'sms', NULL, '工资{{{{ amount }}}}元', "
    '\'{"provider_templates": {"aliyun_sms": {"template_code": "SMS_1", "params": {}}}}\', '
    f"'{NOW}', '{NOW}')",
    "INSERT INTO templates (id, key, channel, subject, body, options, created_at, updated_at) "
    f"VALUES ('tpl_2', 'orphan.email', 'email', '主题', '正文', '{{}}', '{NOW}', '{NOW}')",
    "INSERT INTO scenarios (id, key, name, message_class, channels, required_variables, "
    "templates, created_at, updated_at) VALUES ('scn_1', 'salary', 'salary', 'transactional', "
    '\'["sms"]\', \'[{"name": "amount", "type": "decimal", "description": null}]\', '
    f"'{{\"sms\": \"salary.sms\"}}', '{NOW}', '{NOW}')",
]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    yield request.getfixturevalue("empty_postgres")


def _sql(url: str, *statements: str) -> list[list[Any]]:
    async def run() -> list[list[Any]]:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                results = []
                for statement in statements:
                    result = await conn.execute(text(statement))
                    results.append([tuple(r) for r in result] if result.returns_rows else [])
                return results
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_existing_templates_become_published_version_one(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0002")
    _sql(database_url, *LEGACY)
    upgrade(database_url)
    templates, versions = _sql(
        database_url,
        "SELECT key, name, variables, current_version, latest_version FROM templates ORDER BY key",
        "SELECT t.key, v.version, v.status, v.subject, v.body, v.options, v.variables "
        "FROM template_versions v JOIN templates t ON t.id = v.template_id ORDER BY t.key",
    )
    amount = [{"name": "amount", "type": "decimal", "description": None}]
    decode = _json_decoder(database_url)
    assert [(k, n, decode(v), c, latest) for k, n, v, c, latest in templates] == [
        ("orphan.email", "orphan.email", [], 1, 1),
        ("salary.sms", "salary.sms", amount, 1, 1),
    ]
    assert [(k, n, st, su, b, decode(o), decode(v)) for k, n, st, su, b, o, v in versions] == [
        ("orphan.email", 1, "published", "主题", "正文", {}, []),
        (
            "salary.sms",
            1,
            "published",
            None,
            "工资{{ amount }}元",
            {"provider_templates": {"aliyun_sms": {"template_code": "SMS_1", "params": {}}}},
            amount,
        ),
    ]
    command.downgrade(config, "0002")
    (rows,) = _sql(database_url, "SELECT key, subject, body FROM templates ORDER BY key")
    assert rows == [("orphan.email", "主题", "正文"), ("salary.sms", None, "工资{{ amount }}元")]
    upgrade(database_url)  # and up again


def _json_decoder(url: str) -> Any:
    import json

    if url.startswith("sqlite"):
        return json.loads
    return lambda value: json.loads(value) if isinstance(value, str) else value


SENDERS = (
    "+8613800000042",
    "8613800000043",
    "13800000044",
    "x",
    "+86 138 0000 0045",
    "+1 415 555 0100",
)


def test_migration_0012_gives_existing_replies_their_number_key(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0011")
    opt_out = "TRUE" if database_url.startswith("postgres") else "1"
    _sql(
        database_url,
        *(
            "INSERT INTO inbound_messages (id, provider, channel, sender, text, opt_out, "
            f"received_at) VALUES ('inb_{i}', 'aliyun-main', 'sms', '{sender}', 'TD', {opt_out}, "
            f"'{NOW}')"
            for i, sender in enumerate(SENDERS)
        ),
    )
    upgrade(database_url)
    (rows,) = _sql(database_url, "SELECT id, sender_key FROM inbound_messages ORDER BY id")
    assert rows == [
        ("inb_0", "13800000042"),
        ("inb_1", "13800000043"),
        ("inb_2", "13800000044"),
        ("inb_3", "x"),
        ("inb_4", "13800000045"),
        ("inb_5", "+14155550100"),
    ]
    # the migration's frozen copy agrees with the code it ships with
    assert [key for _, key in rows] == [phone_key(sender) for sender in SENDERS]
    command.downgrade(config, "0011")
    upgrade(database_url)
