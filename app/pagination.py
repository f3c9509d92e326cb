"""Opaque list cursors: ``{"items": [...], "next_cursor": "..."}``, ``?limit=&cursor=``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Query

from app.errors import ValidationFailed

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        position = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if not position:
        raise ValidationFailed.field("cursor", "not a cursor from a previous page")
    return position


def paginate(rows: list[T], limit: int, position: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Cut a page from ``limit + 1`` fetched rows; a cursor only when more rows exist."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(position(page[-1]))
