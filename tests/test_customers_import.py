"""Bulk CSV import: API (streamed) and `icc customers import`, errors by line, idempotency."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app.cli import main
from app.settings import get_settings
from tests.conftest import Platform
from tests.test_customers import declare

HEADER = "id,name,phone,email,tags,aum,tier,products,opened_on\n"
GOOD = (
    "C0001,张伟,13800000001,zhang.wei@example.com,wealth|payroll,1200000.00,private,fund|deposit,"
    "2015-03-01\n"
    'C0002,"李, 娜",13900000002,,,8000,mass,,\n'
    'C0003,"王\n芳",,wang@example.com,staff,,,,\n'
)
BAD = (
    "C0004,赵六,not-a-phone,,,12abc,mass,,\n"
    "C0005,钱七,13700000005,,,,,,2015-02-30\n"
    "bad id!,孙八,,,,,,,\n"
    "C0006,周九\n"
)
ATTRS = {
    "aum": {"type": "number"},
    "tier": {"type": "string"},
    "products": {"type": "string_list"},
    "opened_on": {"type": "date"},
}


async def post_csv(platform: Platform, body: bytes | str, role: str = "marketer") -> Any:
    data = body.encode() if isinstance(body, str) else body
    async with platform.client(role) as client:
        return await client.post(
            "/v1/customers/import", content=data, headers={"Content-Type": "text/csv"}
        )


async def test_import_good_and_bad_rows_then_again(platform: Platform) -> None:
    await declare(platform, ATTRS)
    body = "\ufeff" + HEADER + GOOD + "\n" + BAD
    first = await post_csv(platform, body)
    assert first.status_code == 200, first.text
    summary = first.json()
    assert {k: summary[k] for k in ("rows", "inserted", "updated", "unchanged", "failed")} == {
        "rows": 7,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 4,
    }
    errors = [(e["line"], e["field"]) for e in summary["errors"]]
    assert errors == [(7, "phone"), (7, "aum"), (8, "opened_on"), (9, "id"), (10, "row")]
    assert summary["errors_truncated"] is False
    async with platform.client("system") as client:
        c1 = (await client.get("/v1/customers/C0001")).json()
        c2 = (await client.get("/v1/customers/C0002")).json()
        c3 = (await client.get("/v1/customers/C0003")).json()
    assert c1["name"] == "张伟"
    assert c1["tags"] == ["payroll", "wealth"]
    assert c1["attributes"] == {
        "aum": "1200000",
        "tier": "private",
        "products": ["fund", "deposit"],
        "opened_on": "2015-03-01",
    }
    assert c2["name"] == "李, 娜"
    assert c2["email"] is None
    assert c3["name"] == "王\n芳"
    assert c3["attributes"] == {}
    again = (await post_csv(platform, body, role="system")).json()
    counts = [again[k] for k in ("inserted", "updated", "unchanged", "failed")]
    assert counts == [0, 0, 3, 4]
    async with platform.client("system") as client:
        assert (await client.get("/v1/customers/C0001")).json()["updated_at"] == c1["updated_at"]


async def test_import_writes_only_its_columns(platform: Platform) -> None:
    await declare(platform, ATTRS)
    assert (await post_csv(platform, HEADER + GOOD)).json()["inserted"] == 3
    async with platform.client("marketer") as client:
        await client.post("/v1/customers/C0001/opt-out", json={})
    changed = await post_csv(platform, "id,phone,aum\nC0001,13800000009,\nC0009,,5\n")
    assert changed.json()["updated"] == 1
    assert changed.json()["inserted"] == 1
    async with platform.client("system") as client:
        c1 = (await client.get("/v1/customers/C0001")).json()
    assert c1["phone"] == "13800000009"
    assert c1["name"] == "张伟"  # no name column: kept
    assert c1["tags"] == ["payroll", "wealth"]
    assert "aum" not in c1["attributes"]  # an empty cell clears
    assert c1["attributes"]["tier"] == "private"
    assert c1["consent"]["sms"]["marketing"]["granted"] is False  # consent is kept


async def test_later_row_for_the_same_id_wins(platform: Platform) -> None:
    body = "id,name\n" + "".join(f"C{i % 3},name{i}\n" for i in range(10))
    summary = (await post_csv(platform, body)).json()
    assert summary["rows"] == 10
    assert summary["failed"] == 0
    async with platform.client("system") as client:
        assert (await client.get("/v1/customers/C0")).json()["name"] == "name9"


async def test_bad_files_are_refused_before_anything_is_written(platform: Platform) -> None:
    await declare(platform, ATTRS)
    for body, field in (
        ("name,phone\n张三,13800000000\n", "header"),
        ("id,branch\nC1,Shanghai\n", "header"),
        ("id,name,name\nC1,a,b\n", "header"),
        ("", None),
        ('id,name\nC1,"never closed\n', "line 2"),
    ):
        response = await post_csv(platform, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "InvalidCsv"
        if field:
            assert response.json()["fields"][0]["field"] == field
    assert "branch" in (await post_csv(platform, "id,branch\nC1,x\n")).json()["detail"]
    ok = await post_csv_typed(platform, "text/csv; header=present; charset=UTF-8")
    assert ok.status_code == 200, ok.text
    async with platform.client("marketer") as client:
        as_json = await client.post("/v1/customers/import", json={"id": "C1"})
        assert as_json.status_code == 415
        latin1 = await client.post(
            "/v1/customers/import",
            content=b"id\nC1\n",
            headers={"Content-Type": "text/csv; charset=latin-1"},
        )
        assert latin1.status_code == 415
        assert [c["id"] for c in (await client.get("/v1/customers")).json()["items"]] == ["C9"]


async def post_csv_typed(platform: Platform, content_type: str) -> Any:
    async with platform.client("marketer") as client:
        return await client.post(
            "/v1/customers/import", content=b"id\nC9\n", headers={"Content-Type": content_type}
        )


async def test_a_file_broken_half_way_keeps_the_rows_before(platform: Platform) -> None:
    platform.runtime.settings.customers.import_chunk_rows = 2
    try:
        response = await post_csv(platform, 'id,name\nC1,a\nC2,b\nC3,c\nC4,"open\n')
    finally:
        platform.runtime.settings.customers.import_chunk_rows = 2000
    assert response.status_code == 422
    assert "line 5" in response.json()["detail"]
    assert "the 2 rows before it were imported" in response.json()["detail"]


async def test_not_utf8_rows_are_reported(platform: Platform) -> None:
    body = "id,name\nC1,张三\n".encode() + "C2,李四\n".encode("gbk") + b"C3,ok\n"
    summary = (await post_csv(platform, body)).json()
    assert summary["inserted"] == 2
    assert summary["errors"][0]["line"] == 3
    assert "UTF-8" in summary["errors"][0]["message"]


async def test_errors_are_capped_but_counted(platform: Platform) -> None:
    platform.runtime.settings.customers.import_max_errors = 5
    try:
        body = "id,phone\n" + "".join(f"C{i},bad\n" for i in range(20))
        summary = (await post_csv(platform, body)).json()
    finally:
        platform.runtime.settings.customers.import_max_errors = 100
    assert summary["failed"] == 20
    assert len(summary["errors"]) == 5
    assert summary["errors_truncated"] is True


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ICC_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("ICC_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_import_reports_rows_and_is_idempotent(cli_db: Path) -> None:
    path = cli_db / "customers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("id,name,phone,tags\n" + _cli_rows()).encode())
    runner = CliRunner()
    first = runner.invoke(main, ["customers", "import", str(path)])
    assert first.exit_code == 1, first.output  # one row failed
    assert "rows 4: inserted 3, updated 0, unchanged 0, failed 1" in first.output
    assert "line 4: phone: digits" in first.output
    second = runner.invoke(main, ["customers", "import", str(path), "--chunk-rows", "2"])
    assert "rows 4: inserted 0, updated 0, unchanged 3, failed 1" in second.output
    path.write_text("ID,Name\r\nC1,张三丰\r\n", encoding="utf-8")
    third = runner.invoke(main, ["customers", "import", str(path)])
    assert third.exit_code == 0, third.output
    assert "updated 1" in third.output
    bad = cli_db / "bad.csv"
    bad.write_text("name\nx\n", encoding="utf-8")
    refused = runner.invoke(main, ["customers", "import", str(bad)])
    assert refused.exit_code == 1
    assert "no id column" in refused.output


def _cli_rows() -> str:
    return "C1,张三,13800000001,a|b\nC2,李四,,\nC3,bad,12ab,\nC4,王五,13800000004,vip\n"


def _generate(path: Path, rows: int, *, start: int = 0) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("id,name,phone,email,tags\n")
        for i in range(start, start + rows):
            fh.write(f"C{i:08d},客户{i},138{i:08d},user{i}@example.com,t{i % 7}|vip\n")


def test_cli_import_of_50000_rows_in_bounded_memory(cli_db: Path) -> None:
    """Peak memory growth of the whole CLI import, traced: the 50,000 parsed rows held at
    once would take about 50 MB; a streamed import holds one chunk (2,000 rows)."""
    runner = CliRunner()
    warm = cli_db / "warm.csv"  # migrations, imports and caches before measuring
    _generate(warm, 10)
    assert runner.invoke(main, ["customers", "import", str(warm)]).exit_code == 0
    path = cli_db / "big.csv"
    _generate(path, 50_000, start=100)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = runner.invoke(main, ["customers", "import", str(path)])
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert "rows 50000: inserted 50000" in result.output
    assert peak - before < 20 * 1024 * 1024, f"peak growth {(peak - before) / 1e6:.1f} MB"
    assert after - before < 4 * 1024 * 1024, f"retained {(after - before) / 1e6:.1f} MB"


async def test_a_locale_too_long_fails_its_row_not_the_chunk(platform: Platform) -> None:
    body = "id,name,locale\nL1,张伟,zh-Hans12-CN123456\nL2,李娜,zh-CN\n"
    summary = (await post_csv(platform, body)).json()
    assert (summary["inserted"], summary["failed"]) == (1, 1)
    assert summary["errors"][0]["field"] == "locale"


async def test_a_stray_quote_in_a_cell_is_a_character(platform: Platform) -> None:
    """12" and O"Neil are read as the csv module reads them; no row is swallowed into the
    next (two such cells took three rows with them, and the answer blamed the encoding)."""
    body = (
        'id,name,phone\nC1,12" 显示器用户,13800000001\nC2,李娜,13800000002\n'
        'C3,O"Neil,13800000003\nC4,5" 屏,13800000004\nC5,钱七,13800000005\n'
    )
    summary = (await post_csv(platform, body)).json()
    assert (summary["rows"], summary["inserted"], summary["failed"]) == (5, 5, 0)
    async with platform.client("system") as client:
        assert (await client.get("/v1/customers/C3")).json()["name"] == 'O"Neil'
