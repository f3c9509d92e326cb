from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Role(StrEnum):
    system = "system"
    marketer = "marketer"
    analyst = "analyst"
    admin = "admin"


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["core-banking"])
    role: Role
    owner: str | None = Field(
        default=None,
        max_length=100,
        description="the business system the key belongs to (idempotency and message "
        "visibility are scoped to it); defaults to the name",
    )


class KeyOut(BaseModel):
    id: str
    name: str
    owner: str
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the secret; shown only in this response")


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = None
