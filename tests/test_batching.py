from __future__ import annotations

import asyncio

import pytest

from app.batching import LINGER_TURNS, Coalescer


async def test_concurrent_items_share_a_flush_and_keep_their_results() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=4)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0.001)  # the first flush is running: the next ones wait and group
    rest = await asyncio.gather(*(coalescer.submit(i) for i in range(1, 10)))
    assert await first == 0
    assert rest == [i * 2 for i in range(1, 10)]
    assert batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failed_flush_fails_its_batch_only() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("boom")
        return items

    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=2)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)
    assert results[0:2] == [0, 1]
    assert all(isinstance(r, ValueError) for r in results[2:4])
    assert results[4:6] == [4, 5]
    with pytest.raises(ValueError, match="boom"):
        await coalescer.submit(3)


async def test_a_full_batch_waiting_starts_another_flush_beside_the_running_one() -> None:
    running = 0
    most = 0
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        batches.append(items)
        await asyncio.sleep(0.02)
        running -= 1
        return [-i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=3, concurrency=2)
    futures = [coalescer.submit_nowait(i) for i in range(10)]
    assert await asyncio.gather(*futures) == [-i for i in range(10)]
    assert most == 2  # never more than `concurrency`, and a backlog does overlap
    assert sorted(i for batch in batches for i in batch) == list(range(10))
    assert all(len(batch) <= 3 for batch in batches)
    await coalescer.close()


async def test_a_lone_item_after_a_finished_flush_is_flushed() -> None:
    coalescer: Coalescer[int, int] = Coalescer(_double, max_batch=3, concurrency=2)
    assert await coalescer.submit(1) == 2
    await asyncio.sleep(0)  # the runner has ended
    assert await asyncio.wait_for(coalescer.submit(2), timeout=1) == 4


async def _double(items: list[int]) -> list[int]:
    return [i * 2 for i in items]


async def test_items_submitted_within_a_few_loop_turns_share_the_batch() -> None:
    """A batch is taken a few loop turns after it starts (LINGER_TURNS): callers that submit
    in those turns (requests read while the last flush ran) join it; later ones form the
    next."""
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        return items

    async def submit_after(turns: int, item: int) -> int:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await coalescer.submit(item)

    coalescer: Coalescer[int, int] = Coalescer(flush)
    late = LINGER_TURNS + 3
    submitted = [submit_after(turns, turns) for turns in (0, 1, LINGER_TURNS - 1, late)]
    assert await asyncio.gather(*submitted) == [0, 1, LINGER_TURNS - 1, late]
    assert batches == [[0, 1, LINGER_TURNS - 1], [late]]


async def test_a_runner_cancelled_before_its_flush_cancels_what_waits() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items

    coalescer: Coalescer[int, int] = Coalescer(flush)
    future = coalescer.submit_nowait(1)
    (runner,) = coalescer._runners
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(future, timeout=1)  # TimeoutError if it were left waiting
    assert coalescer.backlog == 0
