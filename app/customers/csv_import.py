"""Bulk CSV import of customer profiles: streamed, chunked upserts, bounded memory.

The file: UTF-8 (a BOM is fine), a header row naming the columns ``id`` (required),
``name``, ``phone``, ``email``, ``wechat_openid``, ``locale``, ``timezone``, ``tags``
(separated by ``|``) and declared attributes by name, in any order. Only the columns in the
file are written: an existing customer keeps the fields the file has no column for, and an
empty cell clears its field (or removes the attribute). A later row for the same id wins.

Each chunk of rows is one transaction (a long import must not hold SQLite's write lock for
minutes); since rows are upserts and unchanged rows are not written, importing the same
file again changes nothing, and an import that stopped half-way is finished by running it
again.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.customers import fields, repository
from app.customers.attributes import AttributeType, InvalidValue, coerce_cell
from app.customers.schemas import ImportSummary, RowError
from app.customers.service import attribute_schema
from app.errors import AppError, FieldError
from app.timeutil import utcnow
from strategies.attributes import DEFAULT_TIMEZONE

BOM = b"\xef\xbb\xbf"
MAX_RECORD_BYTES = 1024 * 1024
_CHECKS: dict[str, Callable[[str], str]] = {
    "name": fields.name,
    "phone": fields.phone,
    "email": fields.email,
    "wechat_openid": fields.wechat_openid,
    "locale": fields.locale,
    "timezone": fields.timezone,
}
_EMPTY: dict[str, Any] = {
    "name": None,
    "phone": None,
    "email": None,
    "wechat_openid": None,
    "locale": fields.DEFAULT_LOCALE,
    "timezone": DEFAULT_TIMEZONE,
    "tags": [],
}


class InvalidCsv(AppError):
    status_code = 422
    name = "InvalidCsv"


class RecordSplitter:
    """Cuts a byte stream into CSV records: lines, except that a quoted field may hold line
    breaks. A field is quoted when it starts with ``"``, as Python's csv module reads it: a
    quote inside an unquoted field (``12" 显示器``, ``O"Neil``) is a character, not the start
    of a field running on over the next lines. Holds at most one record."""

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.max = max_record_bytes
        self.line = 0  # lines cut so far
        self._rest = b""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._start = 0
        self._quoted = False  # the record's last line ended inside a quoted field

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The records completed by ``data``: (line where each starts, its bytes)."""
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        if len(self._rest) > self.max:
            self._too_long(self.line + 1)
        records = []
        for line in lines:
            self.line += 1
            if self.line == 1:
                line = line.removeprefix(BOM)
            if not self._pending:
                self._start = self.line
            self._pending.append(line)
            self._pending_size += len(line)
            if self._quoted or b'"' in line:
                self._quoted = _ends_quoted(line, quoted=self._quoted)
            if not self._quoted:
                records.append((self._start, b"\n".join(self._pending)))
                self._pending, self._pending_size = [], 0
            elif self._pending_size > self.max:
                self._too_long(self._start)
        return records

    def close(self) -> list[tuple[int, bytes]]:
        """The last record (a file need not end with a line break)."""
        records = self.feed(b"\n") if self._rest or self._pending else []
        if self._quoted:
            raise InvalidCsv(
                f'line {self._start}: a quoted field is never closed (a missing ")',
                fields=[FieldError(field=f"line {self._start}", message="unclosed quote")],
            )
        return records

    def _too_long(self, line: int) -> None:
        raise InvalidCsv(
            f"line {line}: a record over {self.max} bytes; is this a CSV file with line "
            "breaks (or a quote left open)?",
            fields=[FieldError(field=f"line {line}", message="record too long")],
        )


_COMMA, _QUOTE = ord(","), ord('"')


def _ends_quoted(line: bytes, *, quoted: bool) -> bool:
    """Whether ``line`` ends inside a quoted field (``quoted``: it starts inside one)."""
    state = "quoted" if quoted else "start"  # start of a field, unquoted, quoted, closing
    for byte in line:
        if state == "quoted":
            state = "closing" if byte == _QUOTE else "quoted"
        elif state == "closing":  # "" is a quote; anything else ends the quoting
            state = "quoted" if byte == _QUOTE else "start" if byte == _COMMA else "unquoted"
        elif byte == _COMMA:
            state = "start"
        elif state == "start":
            state = "quoted" if byte == _QUOTE else "unquoted"
    return state == "quoted"


def parse_record(raw: bytes) -> list[str]:
    """The cells of one record; ValueError if it is not UTF-8 CSV."""
    text = raw.decode("utf-8")
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        raise ValueError(str(exc)) from None


class RowParser:
    """Checks the header against the profile fields and the declared attributes, then turns
    each row into a full row for the upsert, or errors."""

    def __init__(self, header: list[str], schema: dict[str, AttributeType]) -> None:
        names = [h.strip().lower() for h in header]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        problems = [f"column {n!r} appears more than once" for n in duplicates]
        if "id" not in names:
            problems.append("no id column")
        unknown = [n for n in names if n != "id" and n not in _EMPTY and n not in schema]
        if unknown:
            declared = ", ".join(sorted(schema)) or "none yet"
            problems.append(
                f"unknown column(s) {', '.join(map(repr, unknown))}: neither a profile field nor "
                f"a declared attribute (declared: {declared})"
            )
        if problems:
            raise InvalidCsv(
                "line 1 (the header): " + "; ".join(problems),
                fields=[FieldError(field="header", message=p) for p in problems],
            )
        self.width = len(names)
        self.id_index = names.index("id")
        self.profile = [(i, n) for i, n in enumerate(names) if n in _EMPTY]
        self.attributes = [(i, n, schema[n]) for i, n in enumerate(names) if n in schema]
        self.columns = frozenset(n for _, n in self.profile)
        self.attribute_names = [n for _, n, _ in self.attributes]

    def parse(self, cells: list[str]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        if len(cells) != self.width:
            return None, [("row", f"{len(cells)} cells; the header has {self.width}")]
        errors: list[tuple[str, str]] = []
        row: dict[str, Any] = dict(_EMPTY)
        row["id"] = cells[self.id_index].strip()
        try:
            fields.customer_id(row["id"])
        except fields.InvalidField as exc:
            errors.append(("id", str(exc)))
        for index, name in self.profile:
            self._profile_cell(row, name, cells[index].strip(), errors)
        attributes: dict[str, Any] = {}
        for index, name, type_ in self.attributes:
            cell = cells[index].strip()
            if cell:
                try:
                    attributes[name] = coerce_cell(type_, cell)
                except InvalidValue as exc:
                    errors.append((name, f"{exc} ({type_.value})"))
        row["attributes"] = attributes
        return (None if errors else row), errors

    @staticmethod
    def _profile_cell(
        row: dict[str, Any], name: str, cell: str, errors: list[tuple[str, str]]
    ) -> None:
        if not cell:
            return
        try:
            row[name] = fields.split_tags(cell) if name == "tags" else _CHECKS[name](cell)
        except fields.InvalidField as exc:
            errors.append((name, str(exc)))


@dataclass
class _Chunk:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


class Importer:
    """One import: feed it records, it upserts them chunk by chunk."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        chunk_rows: int,
        max_errors: int,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.chunk_rows = chunk_rows
        self.max_errors = max_errors
        self.parser: RowParser | None = None
        self.schema: dict[str, AttributeType] = {}
        self.summary = ImportSummary(
            rows=0, inserted=0, updated=0, unchanged=0, failed=0, errors=[], errors_truncated=False
        )
        self._chunk = _Chunk()
        self._stmt: Any = None

    async def start(self) -> None:
        async with self.sessionmaker() as session:
            self.schema = await attribute_schema(session)

    async def add(self, line: int, raw: bytes) -> None:
        try:
            cells = parse_record(raw)
        except ValueError as exc:
            if self.parser is None:
                raise InvalidCsv(f"line {line} (the header): not UTF-8 CSV ({exc})") from None
            self.summary.rows += 1
            self._failed(line, [("row", f"not UTF-8 CSV ({exc}); save the file as UTF-8")])
            return
        if not any(c.strip() for c in cells):
            return  # a blank line
        if self.parser is None:
            self.parser = RowParser(cells, self.schema)
            return
        self.summary.rows += 1
        row, errors = self.parser.parse(cells)
        if row is None:
            self._failed(line, errors)
            return
        if row["id"] in self._chunk.rows:  # the later row wins: write the earlier first
            await self.flush()
        self._chunk.rows[row["id"]] = row
        if len(self._chunk.rows) >= self.chunk_rows:
            await self.flush()

    def _failed(self, line: int, errors: list[tuple[str, str]]) -> None:
        self.summary.failed += 1
        for name, message in errors:
            if len(self.summary.errors) >= self.max_errors:
                self.summary.errors_truncated = True
                return
            self.summary.errors.append(RowError(line=line, field=name, message=message))

    async def flush(self) -> None:
        rows = list(self._chunk.rows.values())
        self._chunk = _Chunk()
        if not rows or self.parser is None:
            return
        async with self.sessionmaker() as session:
            if self._stmt is None:  # one statement (and compilation) per import
                self._stmt = repository.upsert_statement(
                    session,
                    columns=self.parser.columns,
                    merge_attributes=self.parser.attribute_names,
                    now=utcnow(),
                )
            inserted, updated = await repository.upsert_rows(session, self._stmt, rows)
            await session.commit()
        self.summary.inserted += inserted
        self.summary.updated += updated
        self.summary.unchanged += len(rows) - inserted - updated


async def import_csv(
    sessionmaker: async_sessionmaker[AsyncSession],
    source: AsyncIterable[bytes],
    *,
    chunk_rows: int = 2000,
    max_errors: int = 100,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import a CSV byte stream; the summary, with the first ``max_errors`` row errors.
    ``progress`` is told the number of bytes consumed as they are."""
    importer = Importer(sessionmaker, chunk_rows=chunk_rows, max_errors=max_errors)
    await importer.start()
    try:
        await _run(importer, source, progress)
    except InvalidCsv as exc:
        done = importer.summary.inserted + importer.summary.updated + importer.summary.unchanged
        if done:
            exc.detail += (
                f"; the {done} rows before it were imported (importing the fixed file again "
                "is safe)"
            )
        raise
    return importer.summary


async def _run(
    importer: Importer, source: AsyncIterable[bytes], progress: Callable[[int], None] | None
) -> None:
    splitter = RecordSplitter()
    async for data in source:
        for line, raw in splitter.feed(data):
            await importer.add(line, raw)
        if progress is not None:
            progress(len(data))
    for line, raw in splitter.close():
        await importer.add(line, raw)
    if importer.parser is None:
        raise InvalidCsv("the file is empty: it needs a header row with an id column")
    await importer.flush()
