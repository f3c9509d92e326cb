"""SQL compilation details that the equivalence property does not show."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import registry

from app.customers.models import Customer
from strategies.rules import validate
from strategies.sql import compile_sql
from tests.strategies import samples

COLUMNS = {"locale": Customer.locale, "timezone": Customer.timezone}
HOSTILE = "x'); DROP TABLE customers; --"


def compiled(rule: dict[str, Any], dialect: str) -> tuple[str, dict[str, Any]]:
    where = compile_sql(
        validate(rule, samples.SCHEMA),
        attributes_column=Customer.attributes,
        columns=COLUMNS,
        dialect=dialect,
    )
    engine_dialect = registry.load(dialect)()
    statement = select(Customer.id).where(where).compile(dialect=engine_dialect)
    return str(statement), dict(statement.params)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_values_and_keys_are_bound_never_inlined(dialect: str) -> None:
    rule = {
        "any": [
            {"field": "tier", "op": "eq", "value": HOSTILE},
            {"field": "tags", "op": "contains", "value": HOSTILE},
            {"field": "branch", "op": "in", "value": [HOSTILE, "上海"]},
            {"field": "locale", "op": "contains", "value": HOSTILE},
            {"field": "aum", "op": "between", "value": [1, 2]},
        ]
    }
    sql, params = compiled(rule, dialect)
    assert "DROP" not in sql
    assert "tier" not in sql
    assert "上海" not in sql
    assert HOSTILE in params.values()


def test_postgresql_orders_dates_in_code_point_collation() -> None:
    sql, _ = compiled({"field": "birthday", "op": "gt", "value": "2000-01-01"}, "postgresql")
    assert 'COLLATE "C"' in sql


def test_unknown_dialect_or_missing_builtin_column_is_a_programming_error() -> None:
    rule = validate({"field": "locale", "op": "eq", "value": "zh-CN"}, samples.SCHEMA)
    with pytest.raises(ValueError, match="not 'mysql'"):
        compile_sql(rule, attributes_column=Customer.attributes, columns=COLUMNS, dialect="mysql")
    with pytest.raises(ValueError, match="no column given for built-in field 'locale'"):
        compile_sql(rule, attributes_column=Customer.attributes, columns={}, dialect="sqlite")
