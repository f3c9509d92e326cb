"""Validated rules compiled to SQL conditions over ``customers`` (SQLite JSON1 and
PostgreSQL JSONB), selecting exactly the customers the Python predicate accepts.

How the semantics of :mod:`strategies.predicate` carry over:

- *Known* is a JSON type test (``json_type`` / ``jsonb_typeof``), so a JSON null or a
  value of another type is missing, as in Python; a built-in column is known when not NULL.
- Each condition is ``coalesce(known AND test, false)``: never NULL, so ``NOT`` is plain
  negation as in Python instead of SQL's unknown (which would drop the customer).
- Numbers: SQLite reads JSON numbers as 64-bit ints or doubles and compares them with an
  int or double parameter; within the number domain of :mod:`strategies.attributes` that
  order is the exact decimal order. PostgreSQL casts the JSONB number to ``numeric``
  (inside a CASE, so a string is never cast) against a Decimal parameter.
- Text: SQLite compares bytes (BINARY); PostgreSQL orders with ``COLLATE "C"``; both are
  code-point order, like Python. Dates and datetimes compare as their fixed-width text.
- ``contains``: ``instr``/``strpos`` for a substring; for a list, an ``EXISTS`` over
  ``json_each`` (SQLite) or JSONB containment ``@>`` (PostgreSQL), each guarded by an
  array type test (``json_each`` of a bare string would yield the string itself).
- Relative dates are fixed when the SQL is made (``now``), as the predicate fixes them
  when it is called: a query selects the customers of that moment.

Every value, attribute key and JSON path is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    SQLColumnExpression,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from strategies.attributes import AttributeType, json_number
from strategies.relative import Relative
from strategies.rules import COMPARE, AllOf, Condition, NotOf, Op, Operand, Rule, Scalar, resolve

_NUMERIC = frozenset({AttributeType.number, AttributeType.integer})


def compile_sql(
    rule: Rule,
    *,
    attributes_column: SQLColumnExpression[Any],
    columns: Mapping[str, SQLColumnExpression[Any]],
    dialect: str,
    now: datetime | None = None,
) -> ColumnElement[bool]:
    """A WHERE condition for a rule from :func:`strategies.rules.validate`.

    ``attributes_column`` is the JSON column of attributes (``Customer.attributes``);
    ``columns`` maps each built-in field to its column (``{"locale": Customer.locale,
    ...}``); ``dialect`` is ``"sqlite"`` or ``"postgresql"`` (``app.db.dialect_name``);
    ``now`` fixes relative dates (default: the current time). The condition is never NULL.
    """
    rule = resolve(rule, now or datetime.now(UTC))
    if dialect == "sqlite":
        return _compile(rule, _Sqlite(attributes_column, columns))
    if dialect == "postgresql":
        return _compile(rule, _Postgres(attributes_column, columns))
    raise ValueError(f"segments compile to sqlite or postgresql, not {dialect!r}")


class _Dialect:
    """Reads one field the way the predicate does; subclasses say how for JSON values."""

    def __init__(
        self, attributes: SQLColumnExpression[Any], columns: Mapping[str, SQLColumnExpression[Any]]
    ) -> None:
        self.attributes = attributes
        self.columns = columns

    def column(self, condition: Condition) -> SQLColumnExpression[Any]:
        try:
            return self.columns[condition.field]
        except KeyError:
            raise ValueError(f"no column given for built-in field {condition.field!r}") from None

    def known(self, condition: Condition) -> ColumnElement[bool]:
        if condition.builtin:
            return self.column(condition).is_not(None)
        return self.json_known(condition)

    def value(self, condition: Condition, *, ordered: bool) -> SQLColumnExpression[Any]:
        """The comparable value; ``ordered`` when compared with <, >, between."""
        if condition.builtin:
            return self.column(condition)
        return self.json_value(condition, ordered=ordered)

    def contains(self, condition: Condition) -> ColumnElement[bool]:
        item = literal(condition.value, Text)
        if condition.type is AttributeType.string_list:
            return self.list_contains(condition, item)
        return self.position(self.value(condition, ordered=False), item) > 0

    def json_known(self, condition: Condition) -> ColumnElement[bool]:
        raise NotImplementedError

    def json_value(self, condition: Condition, *, ordered: bool) -> ColumnElement[Any]:
        raise NotImplementedError

    def list_contains(self, condition: Condition, item: ColumnElement[Any]) -> ColumnElement[bool]:
        raise NotImplementedError

    def position(
        self, text: SQLColumnExpression[Any], part: ColumnElement[Any]
    ) -> ColumnElement[int]:
        raise NotImplementedError

    def operand(self, value: Scalar) -> ColumnElement[Any]:
        raise NotImplementedError


_SQLITE_TYPES = {
    AttributeType.string: ("text",),
    AttributeType.date: ("text",),
    AttributeType.datetime: ("text",),
    AttributeType.number: ("integer", "real"),
    AttributeType.integer: ("integer", "real"),
    AttributeType.boolean: ("true", "false"),
    AttributeType.string_list: ("array",),
}


class _Sqlite(_Dialect):
    def path(self, field: str) -> ColumnElement[str]:
        return literal(f'$."{field}"', Text)

    def json_known(self, condition: Condition) -> ColumnElement[bool]:
        kind = func.json_type(self.attributes, self.path(condition.field))
        return kind.in_(_SQLITE_TYPES[condition.type])

    def json_value(self, condition: Condition, *, ordered: bool) -> ColumnElement[Any]:
        # text, an int or a double, or 1/0 for true/false; compared in BINARY collation
        return func.json_extract(self.attributes, self.path(condition.field))

    def list_contains(self, condition: Condition, item: ColumnElement[Any]) -> ColumnElement[bool]:
        items = func.json_each(self.attributes, self.path(condition.field)).table_valued(
            "value", "type"
        )
        found = select(literal(1)).select_from(items).where(items.c.type == "text")
        return found.where(items.c.value == item).exists()

    def position(
        self, text: SQLColumnExpression[Any], part: ColumnElement[Any]
    ) -> ColumnElement[int]:
        return func.instr(text, part)

    def operand(self, value: Scalar) -> ColumnElement[Any]:
        if isinstance(value, Decimal):
            # the int or double that JSON1 itself would read from this decimal's text
            return literal(json_number(value))
        if isinstance(value, bool):
            return literal(1 if value else 0)
        return literal(value, Text)


_PG_TYPES = {
    AttributeType.string: "string",
    AttributeType.date: "string",
    AttributeType.datetime: "string",
    AttributeType.number: "number",
    AttributeType.integer: "number",
    AttributeType.boolean: "boolean",
    AttributeType.string_list: "array",
}


class _Postgres(_Dialect):
    # -> and ->>, not the subscript x['k'] that SQLAlchemy renders for PostgreSQL 14+:
    # the same SQL on every version
    def element(self, field: str) -> ColumnElement[Any]:
        attributes = type_coerce(self.attributes, JSONB)
        return attributes.op("->", return_type=JSONB)(literal(field, Text))

    def text(self, field: str) -> ColumnElement[str]:
        attributes = type_coerce(self.attributes, JSONB)
        return attributes.op("->>", return_type=Text)(literal(field, Text))

    def json_known(self, condition: Condition) -> ColumnElement[bool]:
        kind = func.jsonb_typeof(self.element(condition.field))
        return kind == literal(_PG_TYPES[condition.type], Text)

    def json_value(self, condition: Condition, *, ordered: bool) -> ColumnElement[Any]:
        text = self.text(condition.field)
        if condition.type in _NUMERIC:
            # PostgreSQL may evaluate an AND's sides in any order: only the CASE keeps
            # 'abc'::numeric from being tried on a string
            return case((self.json_known(condition), cast(text, Numeric)), else_=None)
        return text.collate("C") if ordered else text

    def list_contains(self, condition: Condition, item: ColumnElement[Any]) -> ColumnElement[bool]:
        items = type_coerce(self.element(condition.field), JSONB)
        return items.contains(func.jsonb_build_array(item))

    def position(
        self, text: SQLColumnExpression[Any], part: ColumnElement[Any]
    ) -> ColumnElement[int]:
        return func.strpos(text, part)

    def operand(self, value: Scalar) -> ColumnElement[Any]:
        if isinstance(value, Decimal):
            return literal(value, Numeric)
        if isinstance(value, bool):
            return literal("true" if value else "false", Text)  # as ->> reads them
        return literal(value, Text)


def _compile(rule: Rule, dialect: _Dialect) -> ColumnElement[bool]:
    if isinstance(rule, Condition):
        test = and_(dialect.known(rule), _test(rule, dialect))
        return func.coalesce(test, false(), type_=Boolean)
    if isinstance(rule, NotOf):
        return not_(_compile(rule.rule, dialect))
    children = [_compile(r, dialect) for r in rule.rules]  # AllOf or AnyOf
    return and_(*children) if isinstance(rule, AllOf) else or_(*children)


def _test(condition: Condition, dialect: _Dialect) -> ColumnElement[bool]:
    """The operator on a known value (the caller adds the known test)."""
    op = condition.op
    if op is Op.exists:
        return true()  # the known test is all there is
    if op is Op.contains:
        return dialect.contains(condition)
    if op is Op.anniversary:  # resolved: ranges of month-days, "MM-DD" of YYYY-MM-DD
        assert isinstance(condition.value, tuple)
        month_day = func.substr(dialect.value(condition, ordered=True), 6, 5)
        bounds = [literal(_fixed(b), Text) for b in condition.value]
        pairs = zip(bounds[::2], bounds[1::2], strict=True)
        return or_(*(month_day.between(low, high) for low, high in pairs))
    ordered = op not in (Op.eq, Op.ne, Op.in_, Op.not_in)
    value = dialect.value(condition, ordered=ordered)
    operand = condition.value
    if isinstance(operand, tuple):
        operands = [dialect.operand(_fixed(v)) for v in operand]
        if op is Op.between:
            return value.between(operands[0], operands[1])
        return value.in_(operands) if op is Op.in_ else value.not_in(operands)
    assert operand is not None
    right = dialect.operand(_fixed(operand))
    compared: ColumnElement[bool] = COMPARE[op](value, right)
    return compared


def _fixed(value: Operand) -> Scalar:
    assert not isinstance(value, Relative), "compile_sql resolves relative values first"
    return value
