"""The worker side: fallback, retries, scheduled sends."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import app.runtime as runtime_module
from app.messages import pipeline_pg, repository
from app.messages.models import Message
from app.messages.outcomes import Outcome
from app.sandbox.repository import SANDBOX
from app.timeutil import utcnow
from channels.base import ProviderContext, SendResult
from channels.errors import PermanentChannelError, TransientChannelError
from channels.sandbox import SandboxProvider
from tests.conftest import VARIABLES, Platform
from tests.providers import AlwaysFailing, ScriptedProvider

ALL_CONTACTS = {"phone": "13800001234", "wechat_openid": "oAbcd1234567890123456789wxyz"}


def _context(platform: Platform) -> ProviderContext:
    return ProviderContext(sessionmaker=platform.runtime.sessionmaker)


async def _send(platform: Platform, **extra: Any) -> dict[str, Any]:
    body = {"scenario": "account_movement", "customer_id": "C1", "variables": VARIABLES, **extra}
    async with platform.client("system") as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_permanent_error_falls_back_to_next_channel(platform: Platform) -> None:
    await platform.create_scenario()
    wechat = AlwaysFailing(
        "wechat", _context(platform), PermanentChannelError("not following", code="43004")
    )
    platform.runtime.providers.replace("wechat", [wechat])
    accepted = await _send(platform, recipient=ALL_CONTACTS)
    assert accepted["channels"] == ["wechat", "sms"]
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "delivered"
    assert message["channel"] == "sms"
    assert wechat.calls == 1
    types = [e["type"] for e in message["events"]]
    assert types == [
        "accepted",
        "queued",
        "sending",
        "attempt_failed",
        "fallback",
        "sending",
        "sent",
        "delivered",
    ]
    failed = message["events"][3]["detail"]
    assert failed["code"] == "43004"
    assert failed["transient"] is False
    assert message["events"][4]["detail"]["to"] == "sms"


async def test_transient_errors_are_retried_with_backoff(platform: Platform) -> None:
    await platform.create_scenario()
    flaky = ScriptedProvider(
        "sms", _context(platform), [TransientChannelError("timeout"), TransientChannelError("503")]
    )
    platform.runtime.providers.replace("sms", [flaky])
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "delivered"
    assert message["attempts"] == 3
    assert flaky.calls == 3
    types = [e["type"] for e in message["events"]]
    assert types.count("retry_scheduled") == 2
    assert types[-2:] == ["sent", "delivered"]
    retries = [e for e in message["events"] if e["type"] == "retry_scheduled"]
    for event in retries:
        assert 0 < event["detail"]["delay_s"] <= 0.2  # capped by the test's max_delay


async def test_retries_exhausted_on_last_channel_fail_with_reason(platform: Platform) -> None:
    await platform.create_scenario()
    down = AlwaysFailing(
        "sms", _context(platform), TransientChannelError("gateway down", code="503")
    )
    platform.runtime.providers.replace("sms", [down])
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "failed"
    assert down.calls == 3  # max_attempts in the test settings
    assert "gave up after 3 attempts" in message["status_reason"]
    assert message["events"][-1]["type"] == "failed"


async def test_every_channel_failing_ends_failed(platform: Platform) -> None:
    await platform.create_scenario()
    for channel in ("wechat", "sms"):
        error = PermanentChannelError(f"{channel} rejected", code="40003")
        platform.runtime.providers.replace(
            channel, [AlwaysFailing(channel, _context(platform), error)]
        )
    accepted = await _send(platform, recipient=ALL_CONTACTS)
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "failed"
    assert message["status_reason"] == "sms: sms rejected"
    assert [e["type"] for e in message["events"]].count("fallback") == 1


async def test_send_at_waits_until_due(platform: Platform) -> None:
    await platform.create_scenario()
    send_at = datetime.now(UTC) + timedelta(seconds=1.5)
    accepted = await _send(
        platform, recipient={"phone": "13800001234"}, send_at=send_at.isoformat()
    )
    assert accepted["status"] == "scheduled"
    await asyncio.sleep(0.5)
    async with platform.client("system") as client:
        early = (await client.get(f"/v1/messages/{accepted['id']}")).json()
    assert early["status"] == "scheduled"
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "delivered"
    assert datetime.fromisoformat(message["sent_at"]) >= send_at
    assert [e["type"] for e in message["events"]][:2] == ["accepted", "scheduled"]


async def test_send_at_in_the_past_sends_now(platform: Platform) -> None:
    await platform.create_scenario()
    past = datetime.now(UTC) - timedelta(hours=1)
    accepted = await _send(platform, recipient={"phone": "13800001234"}, send_at=past.isoformat())
    assert accepted["status"] == "queued"
    assert (await platform.wait_terminal(accepted["id"]))["status"] == "delivered"


async def test_known_customer_contacts_are_used_and_skips_recorded(platform: Platform) -> None:
    from app.customers import repository as customers

    await platform.create_scenario()
    async with platform.runtime.sessionmaker() as session:
        await customers.upsert(session, "C1", name="张伟", phone="13900001111")
        await session.commit()
    accepted = await _send(platform)
    assert accepted["channels"] == ["sms"]
    message = await platform.wait_terminal(accepted["id"])
    assert message["recipient"] == {"phone": "139****1111"}
    skipped = {s["channel"] for s in message["decision"]["skipped_channels"]}
    assert skipped == {"wechat", "email"}
    assert message["decision"]["customer_known"] is True


class SlowProvider(ScriptedProvider):
    """Takes longer than the lease (0.6 s)."""

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        self.started = getattr(self, "started", 0) + 1
        error = self.errors.pop(0) if self.errors else None  # decided when called
        await asyncio.sleep(0.6)
        if error is not None:
            raise error
        return await super().send(
            to=to, content=content, idempotency_key=idempotency_key, message_id=message_id
        )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_expired_claim_cannot_overwrite_a_newer_one(platform: Platform) -> None:
    from datetime import timedelta

    from app.messages import repository
    from app.messages.outcomes import Outcome
    from app.timeutil import utcnow

    platform.runtime.providers.replace("sms", [])  # nothing sends: we play the workers
    await platform.create_scenario()
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    mid, worker = accepted["id"], platform.runtime.worker_id
    await asyncio.sleep(0.3)  # the in-process worker found no provider: it is queued again
    async with platform.runtime.sessionmaker() as session:
        from sqlalchemy import update

        from app.messages.models import Message

        await session.execute(
            update(Message).values(status="queued", lease_until=None, next_attempt_at=None)
        )
        await session.commit()
    claims = []
    for _ in range(2):  # the same worker claims twice: the first lease expired meanwhile
        now = utcnow()
        async with platform.runtime.sessionmaker() as session:
            [claimed] = await repository.claim_many(
                session, [mid], worker=worker, now=now, lease_until=now - timedelta(seconds=1)
            )
            await session.commit()
        claims.append(claimed.attempts)
    stale = Outcome(mid, {"status": "delivered"}, finished=True, claim=claims[0])
    fresh = Outcome(mid, {"status": "failed"}, finished=True, claim=claims[1])
    async with platform.runtime.sessionmaker() as session:
        assert await repository.apply_outcomes(session, [stale], worker=worker) == set()
        assert await repository.apply_outcomes(session, [fresh], worker=worker) == {mid}
        await session.commit()
        message = await repository.by_id(session, mid)
    assert message is not None
    assert message.status == "failed"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_send_longer_than_the_lease_is_given_up_and_retried(platform: Platform) -> None:
    platform.runtime.settings.queue.lease_seconds = 0.5  # sends get 0.4 s
    await platform.create_scenario()
    slow = SlowProvider("sms", _context(platform), [])
    platform.runtime.providers.replace("sms", [slow])
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    message = await platform.wait_terminal(accepted["id"])
    assert message["status"] == "failed"  # every attempt outlived its lease
    codes = [e["detail"]["code"] for e in message["events"] if e["type"] == "attempt_failed"]
    assert codes == ["lease_timeout"] * 3
    assert slow.started == 3


async def test_a_failed_outcome_write_is_retried_not_sent_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send went out; writing its outcome fails once as the database fails: on SQLite
    through SQLAlchemy (a dropped connection), on PostgreSQL in the worker's own statement on
    the asyncpg connection (a deadlock, unwrapped). The write is retried, so the message is
    recorded sent, once; without it the lease would lapse and the SMS go a second time."""
    platform.runtime.settings.queue.lease_seconds = 1.0
    await platform.create_scenario()
    sms = ScriptedProvider("sms", _context(platform), [])
    platform.runtime.providers.replace("sms", [sms])
    failures: list[Exception] = []
    if platform.runtime.settings.database_url.startswith("postgres"):
        failures.append(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
        write = pipeline_pg.write_held_outcomes

        async def flaky_statement(*args: Any, **kwargs: Any) -> set[str] | None:
            if failures:
                raise failures.pop()
            return await write(*args, **kwargs)

        monkeypatch.setattr(pipeline_pg, "write_held_outcomes", flaky_statement)
    else:
        failures.append(OperationalError("UPDATE messages ...", {}, ConnectionResetError()))
        apply = repository.apply_outcomes

        async def flaky(*args: Any, **kwargs: Any) -> set[str]:
            if failures:
                raise failures.pop()
            return await apply(*args, **kwargs)

        monkeypatch.setattr(runtime_module, "apply_outcomes", flaky)
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    message = await platform.wait_terminal(accepted["id"])
    assert not failures, "the write failed once"
    assert message["status"] == "delivered"
    await asyncio.sleep(1.5)  # past the lease: nothing sends it again
    assert sms.calls == 1
    async with platform.client("admin") as client:
        again = (await client.get(f"/v1/messages/{accepted['id']}")).json()
        params = {"message_id": accepted["id"]}
        recorded = (await client.get("/v1/sandbox/deliveries", params=params)).json()
    assert again["attempts"] == 1
    # the send is recorded with its outcome, once, under the id the message names
    assert [d["id"] for d in recorded["items"]] == [again["provider_message_id"]]
    assert sms.unsettled == 0


class _TwoClaims(NamedTuple):
    message_id: str
    claims: list[int]  # the older claim's lease ran out before the newer one
    sandbox: SandboxProvider
    sent: list[SendResult]  # a sandbox send under each claim

    def outcome(self, n: int) -> Outcome:
        values = {"status": "delivered", "provider": self.sandbox.account}
        values["provider_message_id"] = self.sent[n].provider_message_id
        return Outcome(self.message_id, values, finished=True, claim=self.claims[n])


async def _two_claims(platform: Platform, recipient: dict[str, str] | None = None) -> _TwoClaims:
    """A message the worker claimed twice (the first lease ran out), sent through a sandbox
    account under each claim; neither outcome written yet. We play the worker."""
    runtime = platform.runtime
    runtime.providers.replace("sms", [])  # nothing sends
    await platform.create_scenario()
    accepted = await _send(platform, recipient=recipient or {"phone": "13800001234"})
    mid, worker = accepted["id"], runtime.worker_id
    await asyncio.sleep(0.3)  # the in-process worker found no provider: it is queued again
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(Message).values(status="queued", lease_until=None, next_attempt_at=None)
        )
        await session.commit()
    claims = []
    for n in range(2):  # the first lease has run out; the second is live
        now = utcnow()
        lease_until = now + timedelta(seconds=-1 if n == 0 else 60)
        async with runtime.sessionmaker() as session:
            [claimed] = await repository.claim_many(
                session, [mid], worker=worker, now=now, lease_until=lease_until
            )
            await session.commit()
        claims.append(claimed.attempts)
    sandbox = SandboxProvider(account="sandbox-sms-2", channel="sms", context=_context(platform))
    runtime.providers.replace("sms", [sandbox])
    sent = [
        await sandbox.send(
            to="13800001234",
            content={"body": f"send {n}"},
            idempotency_key=f"{mid}:sms",
            message_id=mid,
        )
        for n in range(2)
    ]
    return _TwoClaims(mid, claims, sandbox, sent)


async def _sandbox_rows(platform: Platform, message_id: str) -> list[tuple[str, Any]]:
    async with platform.runtime.sessionmaker() as session:
        rows = await session.execute(
            select(SANDBOX.c.id, SANDBOX.c.content).where(SANDBOX.c.message_id == message_id)
        )
        return [(row.id, row.content) for row in rows]


async def _only_recorded(platform: Platform, two: _TwoClaims, n: int) -> None:
    """The sandbox holds the send under claim ``n`` alone, and the message names it."""
    sent = two.sent[n].provider_message_id
    assert await _sandbox_rows(platform, two.message_id) == [(sent, {"body": f"send {n}"})]
    async with platform.runtime.sessionmaker() as session:
        message = await repository.by_id(session, two.message_id)
    assert message is not None
    assert message.provider_message_id == sent


async def test_the_sandbox_records_a_send_only_with_its_outcome(platform: Platform) -> None:
    """The sandbox keeps a send in memory until its outcome is written, and writes it in
    that transaction: the newer claim's send leaves the row the message names; the send of
    the claim it overtook, whose outcome comes after, leaves none and is let go."""
    two = await _two_claims(platform)
    runtime = platform.runtime
    assert await runtime._record_group([two.outcome(1)]) == [True]
    assert two.sandbox.unsettled == 1  # the older send waits for its outcome
    assert await runtime._record_group([two.outcome(0)]) == [False]  # overtaken
    assert two.sandbox.unsettled == 0
    await _only_recorded(platform, two, 1)


async def test_of_two_claims_outcomes_in_one_group_only_the_newer_is_written(
    platform: Platform,
) -> None:
    """The first lease ran out while its outcome waited to be written, and both outcomes
    land in one group: the newer claim's is written (and its send recorded), the older one
    is reported overtaken, whatever their order."""
    two = await _two_claims(platform)
    outcomes = [two.outcome(1), two.outcome(0)]
    assert await platform.runtime._record_group(outcomes) == [True, False]
    assert two.sandbox.unsettled == 0
    await _only_recorded(platform, two, 1)


async def test_the_sandbox_keeps_no_copy_of_a_send_whose_customer_was_erased(
    platform: Platform,
) -> None:
    """The customer is erased while their message is being sent (after the sandbox
    answered, before the outcome is written): the outcome is recorded, without personal
    data, and the sandbox keeps no copy of the send (the recipient and the text)."""
    two = await _two_claims(platform)
    async with platform.client("admin") as client:
        erased = await client.delete("/v1/customers/C1")
    assert erased.status_code in (200, 202, 204), erased.text
    outcomes = [two.outcome(1), two.outcome(0)]
    assert await platform.runtime._record_group(outcomes) == [True, False]
    assert two.sandbox.unsettled == 0
    assert await _sandbox_rows(platform, two.message_id) == []
    async with platform.runtime.sessionmaker() as session:
        message = await repository.by_id(session, two.message_id)
    assert message is not None
    assert message.status == "delivered"
    assert message.recipient == {}


async def test_the_sandbox_lets_go_of_sends_whose_outcome_never_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send whose outcome is never settled (it timed out after the sandbox answered) is
    let go an hour later, at the next send, so the sandbox does not grow without end."""
    import channels.sandbox as sandbox_module

    clock = [1_000.0]
    monkeypatch.setattr(sandbox_module, "monotonic", lambda: clock[0])
    sandbox = sandbox_module.SandboxProvider(
        account="sandbox-sms", channel="sms", context=ProviderContext()
    )

    async def send(n: int) -> str:
        key = f"msg_{n}:sms"
        sent = await sandbox.send(to="138", content={}, idempotency_key=key, message_id=f"m{n}")
        return sent.provider_message_id

    first = await send(1)
    clock[0] += sandbox_module.UNSETTLED_SECONDS - 1
    await send(2)
    assert sandbox.unsettled == 2
    clock[0] += 2
    await send(3)
    assert sandbox.unsettled == 2  # the first went
    sandbox.forget_sends([first])  # settling one let go already is no error
    assert sandbox.unsettled == 2


async def test_a_sandbox_send_is_rolled_back_with_its_outcome(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome's transaction fails at its commit, after the sandbox wrote the send in
    it (the database drops the connection): both are rolled back, and the retried
    transaction writes them once, the send under the id the message names."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.sandbox import repository as sandbox_repository

    await platform.create_scenario()
    failures = [OperationalError("COMMIT", {}, ConnectionResetError())]
    record, commit = sandbox_repository.record_sent, AsyncSession.commit

    async def recording(session: AsyncSession, deliveries: Any) -> None:
        await record(session, deliveries)
        session.info["sandbox_wrote"] = True

    async def flaky_commit(session: AsyncSession) -> None:
        if session.info.pop("sandbox_wrote", False) and failures:
            raise failures.pop()
        await commit(session)

    monkeypatch.setattr(sandbox_repository, "record_sent", recording)
    monkeypatch.setattr(AsyncSession, "commit", flaky_commit)
    accepted = await _send(platform, recipient={"phone": "13800001234"})
    message = await platform.wait_terminal(accepted["id"])
    assert not failures, "the commit failed once"
    assert message["status"] == "delivered"
    async with platform.client("admin") as client:
        params = {"message_id": accepted["id"]}
        recorded = (await client.get("/v1/sandbox/deliveries", params=params)).json()
    assert [d["id"] for d in recorded["items"]] == [message["provider_message_id"]]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_erasure_waits_for_an_outcome_being_written_and_removes_its_send(
    platform: Platform,
) -> None:
    """PostgreSQL: an outcome is being written (its transaction holds the message and has
    written the sandbox's copy of the send) when the customer is erased: the erasure waits
    for it (it locks the customer's messages first) and then deletes that copy."""
    two = await _two_claims(platform)
    runtime = platform.runtime
    async with runtime.sessionmaker() as writing:
        held = await repository.apply_outcomes(writing, [two.outcome(1)], worker=runtime.worker_id)
        assert held == {two.message_id}
        await two.sandbox.record_sends(writing, [two.sent[1].provider_message_id])

        async def erase() -> int:
            async with platform.client("admin") as client:
                return (await client.delete("/v1/customers/C1")).status_code

        erasing = asyncio.create_task(erase())
        await asyncio.sleep(0.5)
        assert not erasing.done(), "the erasure waits for the outcome's transaction"
        await writing.commit()
    assert await erasing in (200, 202, 204)
    assert await _sandbox_rows(platform, two.message_id) == []


class _BrokenRecorder(SandboxProvider):
    """Writes its sends, then fails: its own defect, not the database's."""

    async def record_sends(self, session: Any, provider_message_ids: Any) -> None:
        await super().record_sends(session, provider_message_ids)
        raise RuntimeError("recorder bug")


@pytest.mark.parametrize("broken", [False, True], ids=["all-fine", "one-broken"])
async def test_a_providers_failure_to_record_loses_its_records_only(
    platform: Platform, caplog: pytest.LogCaptureFixture, broken: bool
) -> None:
    """The keeping providers of a group record in one savepoint; when one fails, the others'
    records are written all the same (each again in its own savepoint) and the failing
    one's, half written, are not."""
    from app.messages import recorded_sends

    runtime = platform.runtime
    sms = SandboxProvider(account="keep-sms", channel="sms", context=_context(platform))
    email_class = _BrokenRecorder if broken else SandboxProvider
    email = email_class(account="keep-email", channel="email", context=_context(platform))
    runtime.providers.replace("sms", [sms])
    runtime.providers.replace("email", [email])
    sends = {}
    for provider, to in ((sms, "13800001234"), (email, "a@example.com")):
        result = await provider.send(
            to=to, content={"body": "x"}, idempotency_key=f"k-{to}", message_id=f"m-{to}"
        )
        sends[provider.account] = [result.provider_message_id]
    async with runtime.sessionmaker() as session:
        await recorded_sends.record(runtime, session, sends)
        await session.commit()
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(SANDBOX.c.id, SANDBOX.c.provider))).all()
    expected = {(sends["keep-sms"][0], "keep-sms")}
    if not broken:
        expected.add((sends["keep-email"][0], "keep-email"))
    assert set(rows) == expected
    failures = [
        r for r in caplog.records if r.getMessage() == "a provider failed to record its sends"
    ]
    assert [getattr(r, "provider", None) for r in failures] == (["keep-email"] if broken else [])
