"""A provider whose circuit is open is skipped (failover goes to the next one) without
waiting for a slot of its rate limit: the backup's throughput is not capped at the broken
provider's rate, and the broken provider's slots are not used up by messages it never
sends. The half-open probe is taken after the wait for its slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from channels.accounts import CircuitSettings
from channels.base import SendResult
from channels.circuit import CircuitState
from channels.errors import TransientChannelError
from tests.delivery_attempts import Recording, attempt, claimed, open_circuit, registry


class Down(Recording):
    type_name = "down"

    async def send(
        self, *, to: str, content: Mapping[str, Any], idempotency_key: str, message_id: str
    ) -> SendResult:
        raise TransientChannelError("503 from gateway", code="http_503")


async def test_an_open_circuit_is_skipped_without_waiting_for_its_rate_limit() -> None:
    primary, backup = Down("primary"), Recording("backup")
    providers = registry((primary, {"rate_per_second": 2, "burst": 1}), (backup, {}))
    slot = providers.slot("primary")
    assert slot is not None
    open_circuit(slot.circuit)  # the primary is down

    started = time.monotonic()
    results = await asyncio.gather(
        *(
            attempt(providers, claimed(f"m{i}", "sms", {"phone": "13800138000"}, {"body": "x"}))
            for i in range(8)
        )
    )
    elapsed = time.monotonic() - started
    assert all(r[-1].provider == "backup" and r[-1].result for r in results)
    assert sorted(backup.sent) == [f"m{i}" for i in range(8)]
    # The backup has no limit and the primary is not called: nothing waits for the primary's
    # 2/s (the 8th message would wait 3.5 s).
    assert elapsed < 0.5, f"8 failovers past an open circuit took {elapsed:.2f}s"


async def test_the_half_open_probe_goes_to_the_provider_after_its_rate_wait() -> None:
    primary, backup = Recording("primary"), Recording("backup")
    circuit = CircuitSettings(min_requests=1, open_seconds=0.05)
    providers = registry(
        (primary, {"rate_per_second": 20, "burst": 1, "circuit": circuit}), (backup, {})
    )
    slot = providers.slot("primary")
    assert slot is not None
    open_circuit(slot.circuit, sends=1)
    await asyncio.sleep(0.06)  # due for a probe
    message = claimed("m1", "sms", {"phone": "13800138000"}, {"body": "x"})
    attempts = await attempt(providers, message)
    assert [a.provider for a in attempts] == ["primary"]
    assert primary.sent == ["m1"]
    assert slot.circuit.state is CircuitState.closed
