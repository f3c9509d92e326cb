"""``icc send``: accept one message as the CLI principal and follow it to the end."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from app.auth.schemas import Role
from app.auth.service import Principal
from app.errors import AppError, ValidationFailed, field_errors_from_pydantic
from app.messages import reading, service
from app.messages.schemas import TERMINAL_STATUSES, MessageCreate, MessageStatus
from app.runtime import Runtime
from app.settings import Settings

CLI_PRINCIPAL = Principal(key_id="cli", name="cli", owner="cli", role=Role.admin)


async def send_one(
    settings: Settings, body: dict[str, Any], *, timeout: float = 30.0
) -> dict[str, Any]:
    # Without Redis this process sends the message itself (the lease keeps a running
    # `icc serve` from sending it too); with Redis the workers do.
    runtime = Runtime(settings, run_workers=not settings.redis_url)
    await runtime.start()
    try:
        try:
            item = MessageCreate.model_validate(body)
        except ValidationError as exc:
            fields = field_errors_from_pydantic(exc.errors())
            return ValidationFailed("invalid message", fields=fields).body()
        request = service.AcceptRequest(item.scenario, CLI_PRINCIPAL.owner, item, None)
        try:
            message_id = (await runtime.accept(request)).id
        except AppError as exc:
            return exc.body()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with runtime.sessionmaker() as session:
                out = await reading.get_message(session, message_id, principal=CLI_PRINCIPAL)
            if out.status in TERMINAL_STATUSES or out.status == MessageStatus.scheduled:
                return out.model_dump(mode="json")
            if loop.time() > deadline:
                return out.model_dump(mode="json")
            await asyncio.sleep(0.1)
    finally:
        await runtime.close()
