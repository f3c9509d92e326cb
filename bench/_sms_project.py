"""The project's side of bench.sms_throughput: the accepting API in the benchmark's process
(an accept-only runtime, called through ``httpx.ASGITransport``) and one ``icc worker``
process per round, sending through one ``http_sms`` account to the simulator."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.auth.schemas import Role
from app.auth.service import create_key
from app.main import create_app
from app.runtime import Runtime
from bench._cpu import process_cpu
from bench._sms_gateway import Gateway
from bench._sms_raw import phone, raw_body
from bench._support import BenchError, Child, Workspace, icc_command, wait_arq_worker

BATCH = 5_000  # items per POST /v1/messages/batch
ROUND_TIMEOUT = 300.0
ACCOUNT = "gateway-bench"
# rate_per_second unset would mean the plugin's default_rate (100/s): set one no run reaches
NO_LIMIT = 10_000_000
SCENARIO: dict[str, Any] = {
    "key": "sms_bench",
    "class": "transactional",
    "channels": ["sms"],
    "required_variables": [
        {"name": "account_tail", "type": "string"},
        {"name": "amount", "type": "decimal"},
        {"name": "balance", "type": "decimal"},
    ],
    "templates": {
        "sms": {
            "body": "【示例银行】您尾号{{ account_tail }}的账户于今日支出人民币{{ amount }}元，"
            "余额{{ balance }}元。如有疑问请致电95500。"
        }
    },
}
VARIABLES = {"account_tail": "1234", "amount": "1200.00", "balance": "35200.50"}


def providers_toml(gateway_url: str) -> str:
    return f"""[[providers]]
name = "{ACCOUNT}"
type = "http_sms"
channel = "sms"
rate_per_second = {NO_LIMIT}
burst = {NO_LIMIT}
[providers.settings]
url = "{gateway_url}"
success_field = "code"
success_value = "0"
message_id_field = "data.msgid"
"""


class Project:
    """The accepting API in this process, and one ``icc worker`` process per round."""

    def __init__(self, ws: Workspace, runtime: Runtime, env: dict[str, str], db: Any) -> None:
        self.ws, self.runtime, self.env, self.db = ws, runtime, env, db
        self.dsn = env["ICC_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        self.app = create_app(runtime.settings, runtime=runtime)
        self.keys: dict[str, str] = {}
        self.workers: list[Child] = []

    def client(self, role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://icc.bench",
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=300,
        )

    async def prepare(self) -> None:
        async with self.runtime.sessionmaker() as session:
            for role in (Role.system, Role.marketer):
                _, self.keys[role.value] = await create_key(
                    session, name=f"bench-{role.value}", role=role, owner=f"bench-{role.value}"
                )
            await session.commit()
        async with self.client("marketer") as client:
            response = await client.post("/v1/scenarios", json=SCENARIO)
        if response.status_code != 201:
            raise BenchError(f"scenario not created: {response.status_code} {response.text}")

    async def accept(self, count: int, tag: str) -> list[str]:
        ids: list[str] = []
        async with self.client("system") as client:
            for start in range(0, count, BATCH):
                items = [
                    {"customer_id": f"{tag}{i:06d}", "recipient": {"phone": phone(i)}}
                    | {"variables": VARIABLES}
                    for i in range(start, min(count, start + BATCH))
                ]
                body = orjson.dumps({"scenario": SCENARIO["key"], "items": items})
                response = await client.post(
                    "/v1/messages/batch",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 202:
                    raise BenchError(f"batch answered {response.status_code}: {response.text}")
                ids += [r["id"] for r in response.json()["items"] if r.get("id")]
        if len(ids) != count:
            raise BenchError(f"accepted {len(ids)} of {count}")
        return ids

    def start_worker(self, tag: str) -> Child:
        worker = self.ws.spawn(f"icc-worker-{tag}", [*icc_command(), "worker"], env=self.env)
        self.workers.append(worker)
        wait_arq_worker(worker, self.runtime.settings.queue.name)
        return worker

    async def wait_sent(self, ids: list[str], worker: Child, gateway: Gateway) -> None:
        """Until the simulator has answered every message (polled there: cheap), then
        until the database says all are sent."""
        deadline = time.monotonic() + ROUND_TIMEOUT
        while (await gateway.count()) < len(ids):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"not all {len(ids)} sent after {ROUND_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)
        sql = (
            "SELECT count(*) FILTER (WHERE status = 'sent'), "
            "count(*) FILTER (WHERE status = 'failed') FROM messages WHERE id = ANY($1::text[])"
        )
        while True:
            sent, failed = await self.db.fetchrow(sql, ids)
            if failed:
                raise BenchError(f"{failed} messages failed; worker log:\n{worker.tail()}")
            if sent == len(ids):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {sent} of {len(ids)} sent after {ROUND_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def check_sent(self, ids: list[str]) -> None:
        """Every message is ``sent`` in the database (a round that wrote its outcomes)."""
        sent = await self.db.fetchval(
            "SELECT count(*) FROM messages WHERE id = ANY($1::text[]) AND status = 'sent'", ids
        )
        if sent != len(ids):
            raise BenchError(f"only {sent} of {len(ids)} messages are sent in the database")

    async def record_of(self, message_id: str) -> tuple[list[str], list[str]]:
        """What the database keeps of a sent message: its non-null columns and its events'
        types, in order (to check that the bound writes what the worker writes)."""
        row = await self.db.fetchval("SELECT to_jsonb(m) FROM messages m WHERE id = $1", message_id)
        values = json.loads(row) if isinstance(row, str) else row
        events = await self.db.fetch(
            "SELECT type FROM message_events WHERE message_id = $1 ORDER BY id", message_id
        )
        return sorted(k for k, v in values.items() if v is not None), [e[0] for e in events]

    async def backend_cpu(self, since: Any) -> float | None:
        """CPU seconds of the PostgreSQL backends connected since ``since`` (the worker's),
        when PostgreSQL runs on this machine."""
        pids = await self.db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_start >= $1",
            since,
        )
        if not pids or not Path(f"/proc/{pids[0]['pid']}").exists():
            return None
        return sum(process_cpu(r["pid"]) for r in pids)

    async def db_rate(self, ids: list[str]) -> float:
        """N / (first ``sending`` event -> last ``sent_at``): sends the database confirms."""
        span = await self.db.fetchval(
            "SELECT extract(epoch FROM max(m.sent_at) - min(e.at)) FROM messages m "
            "JOIN message_events e ON e.message_id = m.id AND e.type = 'sending' "
            "WHERE m.id = ANY($1::text[])",
            ids,
        )
        return len(ids) / float(span) if span else 0.0

    async def sample(self) -> tuple[str, str, str]:
        """(phone, text, message id) of one sent message, as the provider rendered them."""
        rec = await self.db.fetchrow(
            "SELECT id, recipient, content FROM messages WHERE status = 'sent' LIMIT 1"
        )
        if rec is None:
            raise BenchError("no sent message to copy the request body from")
        recipient, content = (json.loads(v) if isinstance(v, str) else v for v in rec[1:])
        return str(recipient["phone"]), str(content["sms"]["body"]), str(rec["id"])

    async def check_same_body(self, gateway_url: str) -> str:
        """Render one body with the project's provider and compare it with the baseline's:
        returns the SMS text."""
        to, text, message_id = await self.sample()
        slot = self.runtime.providers.slot(ACCOUNT)
        assert slot is not None
        provider: Any = slot.provider
        request = provider.build_request(to=to, content={"body": text}, message_id=message_id)
        if request.content != raw_body(to, text, message_id) or str(request.url) != gateway_url:
            raise BenchError(f"baseline body differs from the provider's: {request.content!r}")
        return text
