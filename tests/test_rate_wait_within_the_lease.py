"""The worker claims a job's messages (lease ``lease_seconds``, send deadline 0.8 of it) up to
two slices ahead of their send, and the deadline also covers the wait for the provider's
rate-limit slot. Each wait is capped at the time left before the deadline less the
provider's send timeout: a message whose slot comes later is retried later as
``rate_limited``, without using up a channel attempt and reserving nothing, instead of
waiting into a ``lease_timeout`` that used one up ("bursts wait, they do not fail").

Time is scaled down: the fixture's lease is 5 s (production 60 s), so the limiter's max_wait
is scaled the same way (30 s -> 2.5 s)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import select

from app.messages import delivery
from app.messages.models import Message, MessageEvent
from app.messages.schemas import MessageCreate
from app.messages.service import AcceptRequest
from app.runtime import Runtime
from app.scenarios import service as scenario_service
from app.scenarios.schemas import ScenarioCreate
from channels.base import ProviderContext, SendResult
from channels.ratelimit import LocalRateLimiter, RateLimitExceeded
from channels.sandbox import SandboxProvider
from tests.conftest import SCENARIO, VARIABLES


class PacedGateway(SandboxProvider):
    """A healthy SMS gateway contracted at 16 messages per second."""

    default_rate = 16.0

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        return SendResult(provider_message_id=f"gw-{message_id}")


async def test_a_rate_limited_backlog_is_retried_later_instead_of_timing_out(
    idle_runtime: Runtime,
) -> None:
    runtime = idle_runtime
    async with runtime.sessionmaker() as session:
        sms_only = {
            **SCENARIO,
            "key": "sms_only",
            "channels": ["sms"],
            "templates": {"sms": SCENARIO["templates"]["sms"]},
        }
        await scenario_service.create(session, ScenarioCreate.model_validate(sms_only))
        await session.commit()
    gateway = PacedGateway(
        account="gw", channel="sms", context=ProviderContext(sessionmaker=runtime.sessionmaker)
    )
    runtime.providers.replace("sms", [gateway])
    runtime.providers.limiter = LocalRateLimiter(max_wait=30.0 * 5 / 60)

    ids = []
    for i in range(120):
        body = MessageCreate.model_validate(
            {
                "scenario": "sms_only",
                "customer_id": f"C{i}",
                "variables": VARIABLES,
                "recipient": {"phone": f"1380000{i:04d}"},
            }
        )
        accepted = await runtime.accept(AcceptRequest("sms_only", "core", body, None))
        ids.append(accepted.message.id)

    await delivery.process_many(runtime, ids)  # one job of 120, as a campaign chunk
    await runtime.close()  # outcomes written

    async with runtime.sessionmaker() as session:
        failed = (
            await session.scalars(select(MessageEvent).where(MessageEvent.type == "attempt_failed"))
        ).all()
        messages = (await session.scalars(select(Message).where(Message.id.in_(ids)))).all()
    codes = Counter(e.detail.get("code") for e in failed)
    # A healthy provider, a backlog of 7.5 s at its rate: no lease ran out mid-wait.
    assert set(codes) <= {"rate_limited"}, f"attempts failed on a healthy provider: {codes}"
    statuses = Counter(m.status for m in messages)
    assert set(statuses) <= {"sent", "retrying"}, statuses
    assert statuses["sent"] >= 40, statuses  # about 16/s for the 4 s of a deadline
    retrying = [m for m in messages if m.status == "retrying"]
    assert all(m.channel_attempts == 0 for m in retrying)  # no attempt used up
    assert len(retrying) == codes["rate_limited"]


async def test_a_caller_s_max_wait_caps_its_wait_and_a_refusal_reserves_nothing() -> None:
    limiter = LocalRateLimiter(max_wait=5)
    await limiter.acquire("p", rate=10, burst=1)  # the burst: at once
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("p", rate=10, burst=1, max_wait=0.05)  # its slot: 0.1 s away
    started = time.monotonic()
    await limiter.acquire("p", rate=10, burst=1, max_wait=0.15)  # the same slot, still free
    assert 0.05 < time.monotonic() - started < 0.15


async def test_a_free_slot_is_taken_however_little_time_is_left() -> None:
    limiter = LocalRateLimiter(max_wait=5)
    await asyncio.wait_for(limiter.acquire("p", rate=10, burst=2, max_wait=-3.0), timeout=0.1)
