"""How a job of the worker runs (app.messages.delivery.process_many): a sliding window of
sends over slices claimed ahead, outcomes handed to the recorder without waiting, the job's
end not waiting for their commit unless the recorder lags, and retries requeued once their
outcome is written."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest

from app.messages import delivery
from app.messages.outcomes import Claimed, Outcome
from app.settings import Settings


class FakeQueue:
    def __init__(self) -> None:
        self.enqueued: list[tuple[list[str], float]] = []

    async def enqueue(self, ids: Sequence[str], *, delay: float = 0.0) -> None:
        self.enqueued.append((list(ids), delay))


class FakeRuntime:
    """What process_many uses of app.runtime.Runtime; outcomes are written when the test
    says so."""

    def __init__(self, *, concurrency: int, backlog: int = 0) -> None:
        self.settings = Settings(queue={"concurrency": concurrency})
        self.queue = FakeQueue()
        self.recording: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self.settling: list[asyncio.Task[None]] = []
        self.backlog = backlog
        self.claims: list[tuple[list[str], int]] = []  # (ids, sends started before)
        self.started: list[str] = []
        self.deadlines: dict[str, float] = {}

    async def claim(self, ids: list[str]) -> list[Claimed]:
        self.claims.append((list(ids), len(self.started)))
        await asyncio.sleep(0.001)
        return [Claimed(i, ["sms"], 0, {"phone": "13800001234"}, {}, 1, 1) for i in ids]

    def record_outcome(self, outcome: Outcome) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.recording.append((outcome, future))
        return future

    @property
    def recording_backlog(self) -> int:
        return self.backlog

    def settle_later(self, settling: Coroutine[Any, Any, None]) -> None:
        self.settling.append(asyncio.create_task(settling))

    def write_all(self, applied: bool = True) -> None:
        for _, future in self.recording:
            future.set_result(applied)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every send takes a moment; ids ending in 'r' come back as a retry in 2 s."""
    in_flight = 0
    started: list[str] = []

    async def send(runtime: Any, message: Claimed, deadline: float) -> Outcome:
        nonlocal in_flight
        runtime.deadlines[message.id] = deadline
        in_flight += 1
        started.append(f"{message.id}:{in_flight}")
        runtime.started.append(message.id)
        await asyncio.sleep(0.01)
        in_flight -= 1
        retry = message.id.endswith("r")
        return Outcome(message.id, {}, finished=not retry, requeue_delay=2.0 if retry else None)

    monkeypatch.setattr(delivery, "_send", send)
    return started


async def test_a_job_sends_in_a_window_and_ends_before_its_outcomes_are_written(
    sends: list[str],
) -> None:
    runtime: Any = FakeRuntime(concurrency=3)
    ids = [f"m{i}" for i in range(9)] + ["m9r"]
    await asyncio.wait_for(delivery.process_many(runtime, ids), timeout=2)
    assert [s.split(":")[0] for s in sends] == ids  # in order
    assert max(int(s.split(":")[1]) for s in sends) == 3  # never more than the window
    # claimed a slice at a time, two slices ahead of the one being sent
    assert runtime.claims == [(ids[0:3], 0), (ids[3:6], 0), (ids[6:9], 3), (ids[9:], 6)]
    # each send is bounded by its own slice's lease, from that slice's claim
    lease = runtime.settings.queue.lease_seconds * 0.8
    now = asyncio.get_running_loop().time()
    assert all(now < d <= now + lease for d in runtime.deadlines.values())
    assert runtime.deadlines["m0"] == runtime.deadlines["m2"] < runtime.deadlines["m9r"]
    assert [o.message_id for o, _ in runtime.recording] == ids
    [settling] = runtime.settling
    assert not settling.done()  # waiting for the commit, in the background
    assert runtime.queue.enqueued == []
    runtime.write_all()
    await asyncio.wait_for(settling, timeout=1)
    assert runtime.queue.enqueued == [(["m9r"], 2.0)]  # the retry, once written


async def test_a_lagging_recorder_holds_the_job_until_its_outcomes_are_written(
    sends: list[str],
) -> None:
    runtime: Any = FakeRuntime(concurrency=2, backlog=delivery.RECORDING_BACKLOG + 1)
    job = asyncio.create_task(delivery.process_many(runtime, ["a", "br"]))
    await asyncio.sleep(0.1)
    assert len(runtime.recording) == 2
    assert not job.done()  # backpressure: arq starts no other job meanwhile
    runtime.write_all()
    await asyncio.wait_for(job, timeout=1)
    assert runtime.settling == []
    assert runtime.queue.enqueued == [(["br"], 2.0)]


async def test_an_outcome_overtaken_by_another_claim_is_not_requeued(sends: list[str]) -> None:
    runtime: Any = FakeRuntime(concurrency=2)
    await delivery.process_many(runtime, ["xr"])
    runtime.write_all(applied=False)
    await asyncio.gather(*runtime.settling)
    assert runtime.queue.enqueued == []
