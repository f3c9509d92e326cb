"""What customers and the bank do after a campaign experiment's sends, simulated through the
public routes with a seeded RNG, and a tally of it per variant (tests/test_ab_end_to_end.py).

- delivery receipts posted to /v1/callbacks/reporting-{channel} (some failed, some repeated
  or contradicted after the fact: neither may count twice);
- clicks on the tracked links (/t/{token}, some twice) and email opens (/o/{token});
- conversions (POST /v1/conversions and /batch): with and without message_id, twice for
  some customers, for holdout and opted-out customers (attributed by their assignment), and
  some that must not count (another event, before the exposure, customers not in the sample).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import Platform

TOKEN = "cb-token"  # tests/providers.py ReportingProvider
LINK = re.compile(r"/t/([0-9A-Za-z]{8})")
PIXEL = re.compile(r"/o/([0-9A-Za-z]{8})")
OFFER = "https://bank.example/offer?p=1"
EXPERIMENT = "card_channels"
EVENT = "card_apply"
BASELINE = {"holdout": 0.06, "sms_short": 0.10, "email_html": 0.08}
CLICK = {"sms": 0.35, "email": 0.25}
VALUES = ("199.00", "1200.50", "88.80", "5000")


@dataclass
class Tally:
    """One variant: the distinct customers of each stage, its messages, cost and value."""

    assigned: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    clicked: set[str] = field(default_factory=set)
    converted: set[str] = field(default_factory=set)
    messages: int = 0
    cost: Decimal = Decimal(0)
    value: Decimal = Decimal(0)

    def stage(self, name: str) -> int:
        customers: set[str] = getattr(self, name)
        return len(customers)


async def message_pages(client: httpx.AsyncClient, campaign_id: str) -> list[dict[str, Any]]:
    """Every message of the campaign, through GET /v1/messages."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"campaign_id": campaign_id, "limit": 500}
    while True:
        response = await client.get("/v1/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["items"]
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]


@dataclass
class _Conversion:
    item: dict[str, Any]
    variant: str | None  # the variant it must be attributed to; None: not attributed


class Simulation:
    def __init__(
        self,
        platform: Platform,
        assigned: dict[str, str],
        rng: random.Random,
        prices: dict[str, Decimal],
    ) -> None:
        self.platform = platform
        self.assigned = assigned
        self.rng = rng
        self.prices = prices
        self.tallies = {key: Tally() for key in BASELINE}
        for cid, key in assigned.items():
            self.tallies[key].assigned.add(cid)
        self.messages: list[dict[str, Any]] = []
        self.failed: set[str] = set()
        self.opened: set[str] = set()

    async def load_messages(self, campaign_id: str) -> None:
        async with self.platform.client("analyst") as client:
            self.messages = sorted(
                await message_pages(client, campaign_id), key=lambda m: m["customer_id"]
            )
        assert len({m["customer_id"] for m in self.messages}) == len(self.messages)
        for message in self.messages:
            key = self.assigned[message["customer_id"]]
            assert (message["experiment"], message["variant"]) == (EXPERIMENT, key)
            assert message["channels"] == [message["channel"]]
            assert message["sent_at"] is not None
            tally = self.tallies[key]
            tally.messages += 1
            tally.sent.add(message["customer_id"])
            tally.cost += self.prices[message["channel"]]

    async def check_messages(self, campaign_id: str) -> None:
        """Each message as the API shows it after the simulation: delivered, failed or still
        sent as its receipt said, clicked as its customer did."""
        async with self.platform.client("analyst") as client:
            after = await message_pages(client, campaign_id)
        for message in after:
            cid = message["customer_id"]
            tally = self.tallies[self.assigned[cid]]
            status = "failed" if message["id"] in self.failed else "sent"
            status = "delivered" if cid in tally.delivered else status
            assert message["status"] == status, message
            assert (message["delivered_at"] is not None) == (cid in tally.delivered)
            assert (message["clicked_at"] is not None) == (cid in tally.clicked)
            assert (message["opened_at"] is not None) == (message["id"] in self.opened)

    async def run(self, *, before: datetime) -> dict[str, Tally]:
        """Receipts, clicks and opens, conversions; ``before``: a time before any exposure."""
        await self.receipts()
        await self.clicks()
        await self.conversions(before)
        return self.tallies

    # -- delivery receipts --------------------------------------------------------------

    async def receipts(self) -> None:
        by_channel: dict[str, list[dict[str, Any]]] = {}
        late: dict[str, list[dict[str, Any]]] = {}
        for message in self.messages:
            draw = self.rng.random()
            if draw >= 0.9:
                continue  # no receipt (yet): sent, not delivered
            delivered = draw < 0.78
            receipt = self._receipt(message, delivered)
            by_channel.setdefault(message["channel"], []).append(receipt)
            if self.rng.random() < 0.1:  # a repeat or a contradicting late report
                late.setdefault(message["channel"], []).append({**receipt, "delivered": True})
            key, cid = self.assigned[message["customer_id"]], message["customer_id"]
            if delivered:
                self.tallies[key].delivered.add(cid)
            else:
                self.failed.add(message["id"])
        for batch in (by_channel, late):
            for channel, receipts in batch.items():
                await self._post_receipts(channel, receipts)

    def _receipt(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        code = "DELIVRD" if delivered else "UNDELIV"
        if self.rng.random() < 0.5:  # as gateways do: their id only
            return {"delivered": delivered, "provider_message_id": message["provider_message_id"]}
        return {"delivered": delivered, "message_id": message["id"], "code": code}

    async def _post_receipts(self, channel: str, receipts: list[dict[str, Any]]) -> None:
        async with self.platform.client(None) as client:
            response = await client.post(
                f"/v1/callbacks/reporting-{channel}",
                params={"token": TOKEN},
                json={"receipts": receipts},
            )
        assert response.status_code == 200, response.text

    # -- clicks and opens ---------------------------------------------------------------

    async def clicks(self) -> None:
        async with self.platform.client(None) as client:
            for message in self.messages:
                if message["id"] in self.failed:
                    continue
                await self._touch(client, message)

    async def _touch(self, client: httpx.AsyncClient, message: dict[str, Any]) -> None:
        channel, cid = message["channel"], message["customer_id"]
        content = message["content"][channel]
        text = content.get("html") or content["body"]
        [token] = set(LINK.findall(text))
        if channel == "email" and self.rng.random() < 0.5:
            [pixel] = PIXEL.findall(content["html"])
            opened = await client.get(f"/o/{pixel}")
            assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
            self.opened.add(message["id"])
        delivered = cid in self.tallies[self.assigned[cid]].delivered
        chance = CLICK[channel] if delivered else CLICK[channel] / 3
        if self.rng.random() >= chance:
            return
        for _ in range(2 if self.rng.random() < 0.3 else 1):  # a second click counts once
            response = await client.get(f"/t/{token}")
            assert response.status_code == 302, response.text
            assert response.headers["location"] == OFFER
        self.tallies[self.assigned[cid]].clicked.add(cid)

    # -- conversions --------------------------------------------------------------------

    async def conversions(self, before: datetime) -> None:
        planned = self._planned(before)
        async with self.platform.client("system") as client:
            for conversion in planned[:20]:
                response = await client.post("/v1/conversions", json=conversion.item)
                assert response.status_code == 201, response.text
                _check_attribution(response.json(), conversion)
            batch = planned[20:]
            response = await client.post(
                "/v1/conversions/batch", json={"items": [c.item for c in batch]}
            )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["accepted"], answer["rejected"]) == (len(batch), 0)
        for item, conversion in zip(answer["items"], batch, strict=True):
            _check_attribution(item["conversion"], conversion)

    def _planned(self, before: datetime) -> list[_Conversion]:
        by_customer = {m["customer_id"]: m for m in self.messages}
        planned: list[_Conversion] = []
        for cid in sorted(self.assigned):
            key = self.assigned[cid]
            clicked = cid in self.tallies[key].clicked
            if self.rng.random() < (0.45 if clicked else BASELINE[key]):
                planned += self._converts(cid, key, by_customer.get(cid))
            elif self.rng.random() < 0.1:
                planned.append(self._not_counted(cid, before, by_customer.get(cid)))
        outside = sorted({f"P{n:05d}" for n in range(600)} - set(self.assigned))[:3]
        for cid in [*outside, "Q00000", "Q00001"]:  # not in the sample, not in the segment
            planned.append(_Conversion({"customer_id": cid, "event": EVENT}, None))
        self.rng.shuffle(planned)
        return planned

    def _converts(self, cid: str, key: str, message: dict[str, Any] | None) -> list[_Conversion]:
        tally = self.tallies[key]
        tally.converted.add(cid)
        found = []
        for repeat in range(2 if self.rng.random() < 0.2 else 1):
            value = Decimal(self.rng.choice(VALUES))
            tally.value += value
            item: dict[str, Any] = {"customer_id": cid, "event": EVENT, "value": str(value)}
            if message is not None and repeat == 0 and self.rng.random() < 0.5:
                item["message_id"] = message["id"]
            found.append(_Conversion(item, key))
        return found

    def _not_counted(
        self, cid: str, before: datetime, message: dict[str, Any] | None
    ) -> _Conversion:
        if self.rng.random() < 0.4:  # an event the experiment does not measure
            return _Conversion({"customer_id": cid, "event": "card_login", "value": "1"}, None)
        # the right event, but before the customer was exposed: outside the window, also
        # when it names the message
        item = {"customer_id": cid, "event": EVENT, "occurred_at": before.isoformat()}
        if message is not None and self.rng.random() < 0.5:
            item["message_id"] = message["id"]
        return _Conversion(item, None)


def _check_attribution(conversion: dict[str, Any], expected: _Conversion) -> None:
    attributed = conversion["attributed"]
    if "message_id" in expected.item:  # the message named is kept, credited or not
        assert attributed["message_id"] == expected.item["message_id"], conversion
    if expected.variant is None:
        assert attributed is None or attributed["experiment"] is None, conversion
        return
    assert attributed is not None, conversion
    assert (attributed["experiment"], attributed["variant"]) == (EXPERIMENT, expected.variant)
