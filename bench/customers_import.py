"""Benchmark: ``icc customers import`` of 1,000,000 CSV rows, streamed in bounded memory.

One generated UTF-8 file (BOM, Chinese names): id, name, phone, email, tags (``|``), and
the declared attributes aum (number) and tier (string). Per database (SQLite file in WAL
mode, the embedded default; PostgreSQL), each side in a process of its own, timed from
start to exit, with its peak resident memory (VmHWM, polled):

- project: ``icc customers import FILE`` (migrate, stream, validate every row, chunked
  upserts of 2,000 rows per transaction, per-row errors, progress bar), into a fresh
  database; then the same file again (idempotent: every row unchanged, nothing written);
- baseline: ``bench/_raw_import.py``: the stdlib csv reader and the driver's executemany
  (sqlite3 / asyncpg) of the same upsert in the same chunks, with no validation, into a
  table like ``customers``; also twice.

The project's peak memory is also shown for a 1,000-row file: the difference is what the
import itself holds, whatever the size of the file. Figures: rows/s of each side and their
ratio, peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench._support import (
    BenchError,
    Workspace,
    child_env,
    header,
    icc_command,
    postgres_database,
    ratio_text,
    row,
    run_main,
    workspace,
)

ROWS = 1_000_000
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗欧阳"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
TAGS = ("payroll", "wealth", "staff", "vip", "loan")
TIERS = ("mass", "affluent", "private")


def write_csv(path: Path, rows: int, *, prefix: str = "C", seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        fh.write("id,name,phone,email,tags,aum,tier\r\n")
        for i in range(rows):
            name = rnd.choice(SURNAMES) + "".join(rnd.choices(GIVEN, k=rnd.randint(1, 2)))
            tags = "|".join(sorted(rnd.sample(TAGS, rnd.randint(0, 2))))
            email = f"user{i}@example.com" if i % 3 else ""
            aum = f"{rnd.randint(0, 5_000_000)}.{rnd.randint(0, 99):02d}"
            fh.write(
                f"{prefix}{i:09d},{name},13{i:09d},{email},{tags},{aum},{rnd.choice(TIERS)}\r\n"
            )


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    output: str


def _high_water_kb(pid: int) -> int:
    """The process's peak resident memory since its exec (VmHWM). (wait4's ru_maxrss would
    also count the parent's pages the child held between fork and exec.)"""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measured(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Run:
    """Run a process to its end: wall time, peak RSS (polled) and its stdout."""
    out = log.with_suffix(".out")
    started = time.perf_counter()
    peak = 0
    with log.open("wb") as err, out.open("wb") as stdout:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=err)
        while proc.poll() is None:
            peak = max(peak, _high_water_kb(proc.pid))
            time.sleep(0.02)
    seconds = time.perf_counter() - started
    output = out.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}:\n{output}\n{tail}")
    return Run(seconds, peak / 1024, output)


async def _declare(database_url: str) -> None:
    from app.customers import service
    from app.customers.attributes import AttributeType
    from app.customers.schemas import AttributeIn
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            for name, type_ in (("aum", AttributeType.number), ("tier", AttributeType.string)):
                await service.put_attribute(session, name, AttributeIn(type=type_))
            await session.commit()
    finally:
        await engine.dispose()


async def _raw_table(database_url: str) -> None:
    """The baseline's table: the columns, key and indexes of ``customers``."""
    from sqlalchemy import text

    from app.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("CREATE TABLE raw_customers (LIKE customers INCLUDING ALL)")
                )
                return
            for (sql,) in await conn.execute(
                text(
                    "SELECT sql FROM sqlite_master WHERE tbl_name = 'customers' AND sql IS NOT NULL"
                )
            ):
                await conn.execute(text(sql.replace("customers", "raw_customers")))
    finally:
        await engine.dispose()


def prepare(ws: Workspace, database_url: str) -> dict[str, str]:
    env = child_env(ICC_DATABASE_URL=database_url, ICC_LOG_FORMAT="text")
    ws.run([*icc_command(), "migrate"], env=env)
    asyncio.run(_declare(database_url))
    asyncio.run(_raw_table(database_url))
    return env


def compare(
    ws: Workspace, label: str, database_url: str, raw: list[str], files: dict[str, Path], rows: int
) -> None:
    env = prepare(ws, database_url)
    icc = [*icc_command(), "customers", "import"]
    small = measured([*icc, str(files["small"])], env=env, cwd=ws.path, log=ws.logs / "small.log")
    peaks = []
    for attempt in ("first", "again"):
        project = measured(
            [*icc, str(files["big"])], env=env, cwd=ws.path, log=ws.logs / f"{label}-{attempt}.log"
        )
        baseline = measured(
            [sys.executable, "-m", "bench._raw_import", *raw, str(files["big"])],
            env=env,
            cwd=ws.path,
            log=ws.logs / f"{label}-raw-{attempt}.log",
        )
        peaks.append(project.peak_mb)
        ours, theirs = rows / project.seconds, rows / baseline.seconds
        row(
            f"{label} {attempt}: icc customers import",
            f"{ours:,.0f} rows/s ({project.seconds:.1f} s), peak RSS {project.peak_mb:.0f} MB",
        )
        row("", (project.output.strip().splitlines() or ["?"])[0])
        row(
            f"{label} {attempt}: raw executemany",
            f"{theirs:,.0f} rows/s ({baseline.seconds:.1f} s), peak RSS "
            f"{baseline.peak_mb:.0f} MB; {baseline.output.strip()}",
        )
        row(f"{label} {attempt}: project/baseline", ratio_text(ours, theirs))
    row(
        f"{label}: peak RSS, 1,000 rows vs {rows:,}",
        f"{small.peak_mb:.0f} MB vs {max(peaks):.0f} MB (+{max(peaks) - small.peak_mb:.0f} MB)",
    )
    print(flush=True)


def body(options: argparse.Namespace) -> None:
    header(
        "customers_import: icc customers import vs raw executemany",
        f"{options.rows:,} CSV rows; databases: {', '.join(options.databases)}",
    )
    with workspace("customers-import") as ws:
        files = {"big": ws.path / "customers.csv", "small": ws.path / "small.csv"}
        started = time.perf_counter()
        write_csv(files["big"], options.rows)
        write_csv(files["small"], 1000, prefix="S", seed=8)
        size = files["big"].stat().st_size / 1e6
        row("file", f"{size:.0f} MB written in {time.perf_counter() - started:.1f} s")
        print()
        if "sqlite" in options.databases:
            db = ws.path / "icc.db"
            compare(ws, "sqlite", f"sqlite:///{db}", ["sqlite", str(db)], files, options.rows)
        if "postgres" in options.databases:
            with postgres_database("icc_bench_customers") as url:
                compare(ws, "postgres", url, ["postgres", url], files, options.rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.customers_import", description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument(
        "--databases",
        default="sqlite,postgres",
        type=lambda s: s.split(","),
        help="sqlite,postgres",
    )
    options = parser.parse_args(argv)
    return run_main(partial(body, options))


if __name__ == "__main__":
    sys.exit(main())
