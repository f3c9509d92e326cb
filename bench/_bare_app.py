"""The baseline of bench.accept_single: a bare FastAPI endpoint that takes the same pydantic
body as ``POST /v1/messages`` and answers with the same response model, doing nothing else
(no auth, no database, no queue). Served by one uvicorn process, like ``icc serve``."""

from __future__ import annotations

from fastapi import FastAPI

from app.ids import new_id
from app.messages.schemas import MessageAccepted, MessageCreate, MessageStatus
from app.timeutil import utcnow

app = FastAPI(title="bare baseline")


@app.post("/v1/messages", status_code=202, response_model=MessageAccepted)
async def accept(body: MessageCreate) -> MessageAccepted:
    return MessageAccepted(
        id=new_id("msg"),
        status=MessageStatus.queued,
        scenario=body.scenario,
        customer_id=body.customer_id,
        channels=[c.value for c in body.channels] if body.channels else [],
        send_at=body.send_at,
        created_at=utcnow(),
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
