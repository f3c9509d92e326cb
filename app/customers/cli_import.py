"""`icc customers import FILE.csv`: the CSV import from a file, with a progress bar."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from app.customers.csv_import import import_csv
from app.customers.schemas import ImportSummary
from app.db import create_engine, create_sessionmaker
from app.settings import Settings

READ_BYTES = 1024 * 1024


async def file_chunks(path: Path, size: int = READ_BYTES) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while data := fh.read(size):
            yield data


async def import_file(
    settings: Settings,
    path: Path,
    *,
    max_errors: int,
    chunk_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    engine = create_engine(settings.database_url)
    try:
        return await import_csv(
            create_sessionmaker(engine),
            file_chunks(path),
            chunk_rows=chunk_rows or settings.customers.import_chunk_rows,
            max_errors=max_errors,
            progress=progress,
        )
    finally:
        await engine.dispose()


def report_lines(summary: ImportSummary) -> list[str]:
    lines = [
        f"rows {summary.rows}: inserted {summary.inserted}, updated {summary.updated}, "
        f"unchanged {summary.unchanged}, failed {summary.failed}"
    ]
    lines += [f"line {e.line}: {e.field}: {e.message}" for e in summary.errors]
    if summary.errors_truncated:
        lines.append(f"... more errors than the {len(summary.errors)} listed (--max-errors)")
    return lines
