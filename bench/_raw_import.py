"""The raw baseline of customers_import, run as its own process so that its peak memory is
its own: the same CSV read with the stdlib csv module, each row turned into the same column
values, written in chunks of 2,000 rows per transaction by the driver's executemany of
``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE <something changed>``. No validation.

    python -m bench._raw_import sqlite DB_PATH FILE.csv
    python -m bench._raw_import postgres URL FILE.csv

Prints ``rows=<n> written=<n>`` (written: -1 on PostgreSQL, whose executemany does not count).
"""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHUNK = 2000
COLUMNS = (
    "id, name, phone, email, wechat_openid, locale, timezone, attributes, tags, "
    "created_at, updated_at"
)
CHANGED = " OR ".join(
    f"raw_customers.{c} IS DISTINCT FROM excluded.{c}"
    for c in ("name", "phone", "email", "tags", "attributes")
)
UPSERT = (
    "INSERT INTO raw_customers ({columns}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET "
    "name = excluded.name, phone = excluded.phone, email = excluded.email, "
    "tags = excluded.tags, attributes = excluded.attributes, updated_at = excluded.updated_at "
    "WHERE {changed}"
)


def chunks(path: Path, now: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of id,name,phone,email,tags,aum,tier as the customers table's column values."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        chunk: list[tuple[Any, ...]] = []
        for id_, name, phone, email, tags, aum, tier in reader:
            attributes = json.dumps({"aum": float(aum), "tier": tier}, ensure_ascii=False)
            tag_list = json.dumps(sorted(t for t in tags.split("|") if t))
            contacts = (id_, name, phone, email or None, None)
            chunk.append((*contacts, "zh-CN", "Asia/Shanghai", attributes, tag_list, now, now))
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def run_sqlite(db_path: str, path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = UPSERT.format(
        columns=COLUMNS,
        values=", ".join("?" * 11),
        changed=CHANGED.replace("IS DISTINCT FROM", "IS NOT"),
    )
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    rows = written = 0
    for chunk in chunks(path, now):
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        conn.executemany(sql, chunk)
        written += conn.total_changes - before
        conn.execute("COMMIT")
        rows += len(chunk)
    conn.close()
    return rows, written


async def run_postgres(url: str, path: Path) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    values = ", ".join(f"${i}" for i in range(1, 12))
    sql = UPSERT.format(columns=COLUMNS, values=values, changed=CHANGED)
    now = datetime.now(UTC)
    rows = 0
    try:
        for chunk in chunks(path, now):
            async with conn.transaction():
                await conn.executemany(sql, chunk)
            rows += len(chunk)
    finally:
        await conn.close()
    return rows, -1  # asyncpg's executemany reports no row counts


def main() -> None:
    kind, target, file = sys.argv[1:4]
    if kind == "sqlite":
        rows, written = run_sqlite(target, Path(file))
    else:
        rows, written = asyncio.run(run_postgres(target, Path(file)))
    print(f"rows={rows} written={written}")


if __name__ == "__main__":
    main()
