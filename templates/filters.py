"""The filters bankers use in templates (pure): money, dates in the customer's time zone, and
masking of card numbers, phones and names.

``{{ amount|money }}`` → ``¥1,200.00`` (Decimal-exact, half-up: 四舍五入);
``{{ amount|money('US$') }}``; ``{{ at|datetime('%m月%d日 %H:%M') }}`` in the customer's time
zone (default Asia/Shanghai); ``{{ card|tail }}`` → ``尾号1234``; ``{{ phone|mask_phone }}`` →
``138****0000``; ``{{ name|mask_name }}`` → ``张*``.

A filter given a value it cannot use raises :class:`FilterError`, which the renderer reports
as a template error naming the filter.
"""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

from app import masking

DEFAULT_TIMEZONE = "Asia/Shanghai"
# The renderer passes the customer's time zone under this key, which no template can name.
TIMEZONE_KEY = "icc:timezone"
_MAX_FORMAT = 100


class FilterError(ValueError):
    """A filter was given a value or an argument it cannot use."""


def _defined(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises its "is undefined" error
    return value


def to_decimal(value: Any, *, name: str = "money") -> Decimal:
    """An exact Decimal from a decimal string, an int, a Decimal or (by its shortest repr) a
    float; never from a bool."""
    value = _defined(value)
    if isinstance(value, bool):
        raise FilterError(f"{name}: {value!r} is not an amount")
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise FilterError(f"{name}: {str(value)[:40]!r} is not an amount") from None
    if not amount.is_finite():
        raise FilterError(f"{name}: {value!r} is not a finite amount")
    return amount


def money(value: Any, symbol: str = "¥", places: int = 2) -> str:
    """``1200`` → ``¥1,200.00``; ``-5.5`` → ``-¥5.50``; ``money('US$')`` → ``US$1,200.00``."""
    if not isinstance(symbol, str) or len(symbol) > 8:
        raise FilterError("money: the currency symbol must be text of at most 8 characters")
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 6:
        raise FilterError("money: places must be an integer from 0 to 6")
    amount = to_decimal(value)
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise FilterError(f"money: {value!r} is too large an amount") from None
        sign = "-" if rounded < 0 else ""  # a rounded -0.001 is ¥0.00, not -¥0.00
        return f"{sign}{symbol}{abs(rounded):,.{places}f}"


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (IANA, e.g. ``Asia/Shanghai``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FilterError(
            f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)"
        ) from None


def _zone_of(context: Context, tz: str | None) -> tzinfo:
    if tz is not None:  # the template's own choice: a wrong name is its error
        return zone(str(tz))
    try:
        return zone(str(context.get(TIMEZONE_KEY) or DEFAULT_TIMEZONE))
    except FilterError:  # a customer's unknown zone must not block a notice
        return zone(DEFAULT_TIMEZONE)


def _parse(value: Any, name: str) -> date | datetime:
    value = _defined(value)
    if isinstance(value, date):  # datetime too
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return (
                datetime.fromisoformat(text)
                if "T" in text or " " in text
                else (date.fromisoformat(text))
            )
        except ValueError:
            pass
    raise FilterError(f"{name}: {str(value)[:40]!r} is not an ISO 8601 date or date-time")


def _strftime(moment: date, fmt: str, name: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > _MAX_FORMAT:
        raise FilterError(f"{name}: the format must be text of at most {_MAX_FORMAT} characters")
    try:
        return moment.strftime(fmt)
    except ValueError as exc:
        raise FilterError(f"{name}: bad format {fmt!r}: {exc}") from None


def _local(moment: datetime, where: tzinfo) -> datetime:
    # A time without an offset is taken as already local to the customer.
    return moment.replace(tzinfo=where) if moment.tzinfo is None else moment.astimezone(where)


@pass_context  # also keeps Jinja2 from evaluating it at compile time, without the time zone
def date_filter(context: Context, value: Any, fmt: str = "%Y-%m-%d", tz: str | None = None) -> str:
    """A date, or the customer's local date of a date-time: ``{{ due|date('%m月%d日') }}``."""
    moment = _parse(value, "date")
    if isinstance(moment, datetime):
        moment = _local(moment, _zone_of(context, tz))
    return _strftime(moment, fmt, "date")


@pass_context
def datetime_filter(
    context: Context, value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None
) -> str:
    """A date-time in the customer's time zone: ``{{ at|datetime('%H:%M') }}``."""
    moment = _parse(value, "datetime")
    if not isinstance(moment, datetime):
        raise FilterError(f"datetime: {value!r} is a date without a time; use |date")
    return _strftime(_local(moment, _zone_of(context, tz)), fmt, "datetime")


_SEPARATORS = re.compile(r"[\s-]")


def tail(value: Any, digits: int = 4, prefix: str = "尾号") -> str:
    """``6222021001121234`` → ``尾号1234``: the last ``digits`` characters of a card or
    account number (spaces and dashes ignored)."""
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 8:
        raise FilterError("tail: digits must be an integer from 1 to 8")
    text = _SEPARATORS.sub("", str(_defined(value)))
    return f"{prefix}{text[-digits:]}"


def mask_phone(value: Any) -> str:
    """``13800000000`` → ``138****0000`` (``+86`` kept in front)."""
    return masking.mask_phone(_SEPARATORS.sub("", str(_defined(value))))


def mask_name(value: Any) -> str:
    """``张三`` → ``张*``, ``欧阳娜娜`` → ``欧***``."""
    return masking.mask_name(str(_defined(value)).strip())


def mask_email(value: Any) -> str:
    """``zhang.wei@example.com`` → ``z***@example.com``."""
    return masking.mask_email(str(_defined(value)).strip())


BANKING_FILTERS: dict[str, Any] = {
    "money": money,
    "date": date_filter,
    "datetime": datetime_filter,
    "tail": tail,
    "mask_phone": mask_phone,
    "mask_name": mask_name,
    "mask_email": mask_email,
}
