"""Segment rules: a JSON tree of conditions, checked against the attribute schema.

A rule is one of::

    {"field": "aum", "op": "gte", "value": 500000}          a condition
    {"all": [rule, ...]}   {"any": [rule, ...]}   {"not": rule}

A date or datetime value may be relative to the time of evaluation, ``{"days": -90}``
(:mod:`strategies.relative`); :func:`resolve` fixes it before a rule is compared.

:func:`validate` turns a marketer's JSON into a typed, normalized :data:`Rule` (values
parsed to their compared form, each condition carrying its attribute's type) or raises
:class:`InvalidRule`, a 422 naming every bad field by its JSON path
(``rule.all[1].not.field: unknown attribute 'tagz'``). Size and depth are bounded, so no
JSON can exhaust the stack here or build a huge query later.

Missing values (see also :mod:`strategies.predicate`): a condition on a missing attribute
is false, whatever its operator (``ne`` and ``not_in`` included); only ``not`` turns it
true. So ``{"field": "tier", "op": "ne", "value": "vip"}`` means "has a tier, not vip",
while ``{"not": {"field": "tier", "op": "eq", "value": "vip"}}`` also takes customers
without a tier.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.errors import FieldError, ValidationFailed
from strategies import relative
from strategies.attributes import (
    MAX_STRING_LENGTH,
    Attribute,
    AttributeType,
    json_number,
    parse_date,
    parse_datetime,
    parse_number,
    parse_string,
)
from strategies.relative import Relative, parse_relative

MAX_DEPTH = 10  # levels of rules, the root counting as one
MAX_NODES = 200  # conditions and groups in one rule
MAX_LIST_VALUES = 500  # values of one in / not_in
MAX_VALUES = 2000  # values of all in / not_in lists of one rule
MAX_ERRORS = 50


class Op(StrEnum):
    eq = "eq"
    ne = "ne"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    in_ = "in"
    not_in = "not_in"
    contains = "contains"
    exists = "exists"
    between = "between"
    anniversary = "anniversary"  # a date's month and day, any year: [{"days": 0}, {"days": 7}]


COMPARE: Mapping[Op, Callable[[Any, Any], Any]] = {
    Op.eq: operator.eq,
    Op.ne: operator.ne,
    Op.gt: operator.gt,
    Op.gte: operator.ge,
    Op.lt: operator.lt,
    Op.lte: operator.le,
}
"""The comparison operators, for Python values and SQLAlchemy expressions alike."""

_ORDERED = frozenset({Op.eq, Op.ne, Op.gt, Op.gte, Op.lt, Op.lte, Op.in_, Op.not_in, Op.between})
OPS_BY_TYPE: Mapping[AttributeType, frozenset[Op]] = {
    # No ordering on free text: code-point order ("private" > "mass") is never what a
    # marketer means, and it would differ from a locale's collation.
    AttributeType.string: frozenset({Op.eq, Op.ne, Op.in_, Op.not_in, Op.contains, Op.exists}),
    AttributeType.number: _ORDERED | {Op.exists},
    AttributeType.integer: _ORDERED | {Op.exists},
    AttributeType.boolean: frozenset({Op.eq, Op.ne, Op.exists}),
    AttributeType.date: _ORDERED | {Op.exists, Op.anniversary},
    AttributeType.datetime: _ORDERED | {Op.exists},
    AttributeType.string_list: frozenset({Op.contains, Op.exists}),
}

Scalar = Decimal | str | bool
"""A compared value: Decimal for number/integer, the stored text for string/date/datetime."""
Operand = Scalar | Relative
"""A value as written: a Scalar, or a date or time relative to the evaluation."""


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, populate_by_name=True)


class Condition(_Node):
    """``field op value``. ``value`` is an Operand, a tuple of them for in/not_in, a
    (low, high) tuple for between, None for exists (only Scalars once resolved)."""

    field: str
    op: Op
    value: Operand | tuple[Operand, ...] | None = None
    type: AttributeType
    builtin: bool = False


class AllOf(_Node):
    rules: tuple[Rule, ...] = Field(alias="all")


class AnyOf(_Node):
    rules: tuple[Rule, ...] = Field(alias="any")


class NotOf(_Node):
    rule: Rule = Field(alias="not")


Rule = Condition | AllOf | AnyOf | NotOf
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


class InvalidRule(ValidationFailed):
    """The rule does not validate; ``fields`` lists every problem by JSON path."""

    def __init__(self, errors: list[FieldError]) -> None:
        shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(shown + more, fields=errors)
        self.errors = errors


def validate(rule: Any, schema: Mapping[str, Attribute], *, root: str = "rule") -> Rule:
    """The typed, normalized form of the JSON ``rule``, checked against ``schema`` (usually
    an :class:`~strategies.attributes.AttributeSchema`); ``root`` prefixes error paths.

    Raises :class:`InvalidRule` (a 422 ``ValidationError``) listing up to 50 problems.
    """
    checker = _Validator(schema, root)
    try:
        result = checker.node(rule, root, 1)
    except _TooManyErrors:
        result = None
    if checker.errors or result is None:
        raise InvalidRule(checker.errors)
    return result


def to_json(rule: Rule) -> dict[str, Any]:
    """The canonical JSON of a validated rule; it validates back to an equal rule."""
    if isinstance(rule, AllOf):
        return {"all": [to_json(r) for r in rule.rules]}
    if isinstance(rule, AnyOf):
        return {"any": [to_json(r) for r in rule.rules]}
    if isinstance(rule, NotOf):
        return {"not": to_json(rule.rule)}
    out: dict[str, Any] = {"field": rule.field, "op": rule.op.value}
    if isinstance(rule.value, tuple):
        out["value"] = [_json_scalar(v) for v in rule.value]
    elif rule.value is not None:
        out["value"] = _json_scalar(rule.value)
    return out


def resolve(rule: Rule, now: datetime) -> Rule:
    """``rule`` with its relative values fixed at ``now`` (aware); the rule itself when it
    has none."""
    if isinstance(rule, Condition):
        value = rule.value
        if rule.op is Op.anniversary:
            match value:
                case (Relative() as low, Relative() as high):
                    ranges = relative.anniversary_ranges(low, high, now)
                    return rule.model_copy(update={"value": ranges})
            return rule  # resolved already: its ranges of month-days
        if isinstance(value, Relative):
            return rule.model_copy(update={"value": relative.resolve(value, rule.type, now)})
        if isinstance(value, tuple) and any(isinstance(v, Relative) for v in value):
            fixed = tuple(
                relative.resolve(v, rule.type, now) if isinstance(v, Relative) else v for v in value
            )
            return rule.model_copy(update={"value": fixed})
        return rule
    if isinstance(rule, NotOf):
        inner = resolve(rule.rule, now)
        return rule if inner is rule.rule else NotOf(rule=inner)
    children = tuple(resolve(r, now) for r in rule.rules)
    if all(new is old for new, old in zip(children, rule.rules, strict=True)):
        return rule
    return type(rule)(rules=children)


def has_relative(rule: Rule) -> bool:
    """Whether the rule holds a relative value (its meaning changes with the time)."""
    if isinstance(rule, Condition):
        values = rule.value if isinstance(rule.value, tuple) else (rule.value,)
        return any(isinstance(v, Relative) for v in values)
    children = (rule.rule,) if isinstance(rule, NotOf) else rule.rules
    return any(has_relative(r) for r in children)


def fields_of(rule: Rule) -> frozenset[str]:
    """The attribute names a rule reads (e.g. to refuse dropping an attribute in use)."""
    if isinstance(rule, Condition):
        return frozenset({rule.field})
    children = (rule.rule,) if isinstance(rule, NotOf) else rule.rules
    return frozenset().union(*(fields_of(r) for r in children))


def _json_scalar(value: Operand) -> Any:
    if isinstance(value, Relative):
        return value.to_json()
    if isinstance(value, Decimal):
        return json_number(value)
    return value


class _TooManyErrors(Exception):
    pass


_GROUPS: dict[str, type[AllOf] | type[AnyOf]] = {"all": AllOf, "any": AnyOf}
_CONDITION_KEYS = frozenset({"field", "op", "value"})
_KINDS = "{field, op, value}, {all: [...]}, {any: [...]} or {not: {...}}"


class _Validator:
    def __init__(self, schema: Mapping[str, Attribute], root: str) -> None:
        self.schema = schema
        self.root = root
        self.errors: list[FieldError] = []
        self.nodes = 0
        self.values = 0

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field=field, message=message))
        if len(self.errors) >= MAX_ERRORS:
            raise _TooManyErrors

    def node(self, raw: Any, path: str, depth: int) -> Rule | None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.error(self.root, f"more than {MAX_NODES} conditions and groups; simplify it")
            raise _TooManyErrors  # one message is enough; don't walk the rest
        if depth > MAX_DEPTH:
            self.error(path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if not isinstance(raw, dict):
            self.error(path, f"expected a rule object: {_KINDS}")
            return None
        kind = self.kind(raw, path)
        if kind in _GROUPS:
            return self.group(kind, raw[kind], f"{path}.{kind}", depth)
        if kind == "not":
            inner = self.node(raw["not"], f"{path}.not", depth + 1)
            return None if inner is None else NotOf(rule=inner)
        if kind == "condition":
            return self.condition(raw, path)
        return None

    def kind(self, raw: dict[str, Any], path: str) -> str | None:
        kinds: list[str] = [k for k in ("all", "any", "not") if k in raw]
        if _CONDITION_KEYS & raw.keys():
            kinds.append("condition")
        if len(kinds) != 1:
            found = ", ".join(repr(k) for k in raw) or "no keys"
            self.error(path, f"expected exactly one kind of rule, {_KINDS}; found {found}")
            return None
        allowed = _CONDITION_KEYS if kinds[0] == "condition" else {kinds[0]}
        for key in raw.keys() - allowed:
            self.error(f"{path}.{key}", f"unknown key; expected {_KINDS}")
        return kinds[0]

    def group(self, kind: str, items: Any, path: str, depth: int) -> Rule | None:
        if not isinstance(items, list) or not items:
            self.error(path, "expected a non-empty list of rules")
            return None
        children = [self.node(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(items)]
        if any(child is None for child in children):
            return None
        return _GROUPS[kind](rules=tuple(c for c in children if c is not None))

    def condition(self, raw: dict[str, Any], path: str) -> Condition | None:
        attribute = self.attribute(raw.get("field"), f"{path}.field")
        op = self.op(raw.get("op"), f"{path}.op", attribute)
        if attribute is None or op is None:
            return None
        ok, value = self.value(attribute, op, raw, f"{path}.value")
        if not ok:
            return None
        return Condition(
            field=attribute.name,
            op=op,
            value=value,
            type=attribute.type,
            builtin=attribute.builtin,
        )

    def attribute(self, name: Any, path: str) -> Attribute | None:
        if not isinstance(name, str):
            self.error(path, "expected an attribute name (a string)")
            return None
        attribute = self.schema.get(name)
        if attribute is None:
            close = difflib.get_close_matches(name, list(self.schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(path, f"unknown attribute {name[:64]!r}{hint}")
        return attribute

    def op(self, name: Any, path: str, attribute: Attribute | None) -> Op | None:
        try:
            op = Op(name)
        except ValueError:
            self.error(path, f"unknown operator {str(name)[:32]!r}; one of {_names(Op)}")
            return None
        if attribute is not None and op not in OPS_BY_TYPE[attribute.type]:
            usable = _names(o for o in Op if o in OPS_BY_TYPE[attribute.type])
            self.error(
                path,
                f"{op.value!r} does not apply to {attribute.type.value} attribute "
                f"{attribute.name!r}; use one of {usable}",
            )
            return None
        return op

    def value(
        self, attribute: Attribute, op: Op, raw: dict[str, Any], path: str
    ) -> tuple[bool, Any]:
        """(ok, normalized value)."""
        value = raw.get("value")
        if op is Op.exists:
            if value is not None:
                self.error(path, "exists takes no value (use not to ask for a missing one)")
                return False, None
            return True, None
        if value is None:
            self.error(path, f"required by {op.value!r}")
            return False, None
        if op in (Op.in_, Op.not_in):
            return self.values_list(attribute, value, path)
        if op is Op.between:
            return self.bounds(attribute, value, path)
        if op is Op.anniversary:
            return self.window(value, path)
        if op is Op.contains:
            return self.scalar(attribute, value, path, contained=True)
        return self.scalar(attribute, value, path)

    def values_list(self, attribute: Attribute, value: Any, path: str) -> tuple[bool, Any]:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
            self.error(path, f"expected a list of 1 to {MAX_LIST_VALUES} values")
            return False, None
        self.values += len(value)
        if self.values > MAX_VALUES:
            self.error(path, f"the rule lists more than {MAX_VALUES} values in all")
            return False, None
        parsed = [self.scalar(attribute, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not all(ok for ok, _ in parsed):
            return False, None
        return True, tuple(dict.fromkeys(v for _, v in parsed))

    def bounds(self, attribute: Attribute, value: Any, path: str) -> tuple[bool, Any]:
        if not isinstance(value, list) or len(value) != 2:
            self.error(path, "expected [low, high]: two values, both included")
            return False, None
        (ok_low, low), (ok_high, high) = (
            self.scalar(attribute, v, f"{path}[{i}]") for i, v in enumerate(value)
        )
        if not (ok_low and ok_high):
            return False, None
        if _above(low, high):
            self.error(path, f"low {_shown(low)} is above high {_shown(high)}")
            return False, None
        return True, (low, high)

    def window(self, value: Any, path: str) -> tuple[bool, Any]:
        """An anniversary's window, two relative days; a reversed one is an error."""
        usage = 'expected [{"days": from}, {"days": to}] counted from today'
        if not isinstance(value, list) or len(value) != 2:
            self.error(path, usage)
            return False, None
        bounds = []
        for i, item in enumerate(value):
            try:
                if not isinstance(item, dict):
                    raise ValueError(usage)
                bounds.append(parse_relative(AttributeType.date, item))
            except ValueError as exc:
                self.error(f"{path}[{i}]", str(exc))
                return False, None
        low, high = bounds
        span = high.amount - low.amount + 1
        if not 1 <= span <= relative.MAX_ANNIVERSARY_SPAN:
            self.error(
                path,
                f"from {low.amount} to {high.amount} days: a window runs forward, "
                f"over at most {relative.MAX_ANNIVERSARY_SPAN} days",
            )
            return False, None
        return True, (low, high)

    def scalar(
        self, attribute: Attribute, value: Any, path: str, *, contained: bool = False
    ) -> tuple[bool, Any]:
        """A value compared with ``attribute``, or with its items or substrings
        (``contained``: a non-empty string); a relative date is kept as such."""
        type_ = AttributeType.string if contained else attribute.type
        try:
            if isinstance(value, dict) and not contained:
                return True, parse_relative(type_, value)
            parsed = _parse_scalar(type_, value)
            if contained and not parsed:
                raise ValueError("expected a non-empty string")
        except ValueError as exc:
            kind = attribute.type.value
            article = "an" if kind[0] in "aeiou" else "a"
            self.error(path, f"{attribute.name!r} is {article} {kind}: {exc}")
            return False, None
        return True, parsed


def _parse_scalar(type_: AttributeType, value: Any) -> Scalar:
    if type_ in (AttributeType.number, AttributeType.integer):
        return parse_number(value, integer=type_ is AttributeType.integer)
    if type_ is AttributeType.boolean:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if type_ is AttributeType.date:
        return parse_date(value)
    if type_ is AttributeType.datetime:
        return parse_datetime(value)
    text = parse_string(value)
    if len(text) > MAX_STRING_LENGTH:
        raise ValueError(f"at most {MAX_STRING_LENGTH} characters")
    return text


def _names(ops: Any) -> str:
    return ", ".join(o.value for o in ops)


def _above(low: Operand, high: Operand) -> bool:
    """Whether ``low`` is certainly above ``high`` (a relative value against a fixed one
    depends on the day: such a range may be empty then, and matches nobody)."""
    if isinstance(low, Relative) and isinstance(high, Relative):
        return low.hours() > high.hours()
    if isinstance(low, Relative) or isinstance(high, Relative):
        return False
    return bool(low > high)  # type: ignore[operator]


def _shown(value: Operand) -> str:
    if isinstance(value, Relative):
        return str(value.to_json())
    return str(json_number(value)) if isinstance(value, Decimal) else repr(value)
