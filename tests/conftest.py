"""Fixtures: the platform on SQLite + in-process queue and on PostgreSQL + arq/Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.auth.schemas import Role
from app.auth.service import create_key
from app.main import create_app
from app.messages.models import Message
from app.messages.schemas import TERMINAL_STATUSES
from app.migrate import upgrade
from app.models import Base
from app.queue.arq_backend import build_worker, stop_worker
from app.runtime import Runtime
from app.scenarios import service as scenario_service
from app.scenarios.schemas import ScenarioCreate
from app.settings import QueueSettings, RetrySettings, Settings
from app.strategies import patching
from tests import services

BACKENDS = ("sqlite", "postgres")
ROLES = {
    "admin": (Role.admin, "ops"),
    "system": (Role.system, "core-banking"),
    "system_cards": (Role.system, "cards"),
    "marketer": (Role.marketer, "marketing"),
    "analyst": (Role.analyst, "analytics"),
}

SCENARIO: dict[str, Any] = {
    "key": "account_movement",
    "class": "transactional",
    "channels": ["wechat", "sms", "email"],
    "required_variables": [
        {"name": "account_tail", "type": "string"},
        {"name": "amount", "type": "decimal"},
    ],
    "templates": {
        "wechat": {"body": "您尾号{{ account_tail }}的账户支出{{ amount }}元"},
        "sms": {"body": "【示例银行】您尾号{{ account_tail }}的账户支出{{ amount }}元"},
        "email": {"subject": "账户变动 {{ account_tail }}", "body": "支出{{ amount }}元"},
    },
}
VARIABLES = {"account_tail": "1234", "amount": "1200.00"}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (skipped without the server, failed under CI),
    dropped afterwards."""
    problem = services.postgres_available()
    if problem is not None:
        services.unavailable("PostgreSQL", problem)
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = asyncio.run(services.create_database(name))
    try:
        yield url
    finally:
        asyncio.run(services.drop_database(name))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with new_postgres_database("icc_test") as url:
        upgrade(url)
        yield url


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A new PostgreSQL database without any migration applied, dropped afterwards."""
    with new_postgres_database("icc_empty") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = services.redis_available()
    if problem is not None:
        services.unavailable("Redis", problem)
    return services.REDIS_URL


def make_settings(database_url: str, redis_url: str | None, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue=QueueSettings(
            name=f"icc:test:{uuid.uuid4().hex[:8]}",
            workers=2,
            sweep_interval=0.2,
            redelivery_grace=3.0,
            lease_seconds=5.0,
        ),
        retry=RetrySettings(max_attempts=3, base_delay=0.05, max_delay=0.2),
        **overrides,
    )


@pytest.fixture
async def idle_runtime(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Runtime]:
    """A runtime on SQLite (``tmp_path / "icc.db"``) whose queue nobody consumes, so jobs
    stay in it; the scenario ``account_movement`` exists."""
    db = tmp_path / "icc.db"
    db.write_bytes(sqlite_template.read_bytes())
    settings = make_settings(f"sqlite:///{db}", None)
    settings.queue.redelivery_grace = 1.0
    runtime = Runtime(settings, run_workers=False)
    await runtime.start()
    scenario_service.clear_cache()
    async with runtime.sessionmaker() as session:
        await scenario_service.create(session, ScenarioCreate.model_validate(SCENARIO))
        await session.commit()
    yield runtime
    await runtime.close()
    scenario_service.clear_cache()


async def truncate_all(runtime: Runtime) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with runtime.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} CASCADE"))


class Platform:
    """A running platform plus API clients for each role."""

    def __init__(self, backend: str, runtime: Runtime) -> None:
        self.backend = backend
        self.runtime = runtime
        self.app = create_app(runtime.settings, runtime=runtime)
        self.keys: dict[str, str] = {}

    def client(self, role: str | None = "system", **headers: str) -> httpx.AsyncClient:
        if role is not None:
            headers["Authorization"] = f"Bearer {self.keys[role]}"
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://icc.test", headers=headers
        )

    def served_client(self, role: str | None = None) -> httpx.AsyncClient:
        """Like ``client``, but an unhandled exception comes back as the 500 a real server
        would answer instead of being raised into the test: for asserting it is not one."""
        headers = {} if role is None else {"Authorization": f"Bearer {self.keys[role]}"}
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://icc.test", headers=headers)

    async def create_keys(self) -> None:
        async with self.runtime.sessionmaker() as session:
            for role_name, (role, owner) in ROLES.items():
                _, self.keys[role_name] = await create_key(
                    session, name=f"test-{role_name}", role=role, owner=owner
                )
            await session.commit()

    async def create_scenario(self, **changes: Any) -> dict[str, Any]:
        async with self.client("marketer") as client:
            response = await client.post("/v1/scenarios", json={**SCENARIO, **changes})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_terminal(self, message_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the API until the message is sent, delivered or failed."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.client("admin") as client:
            while True:
                response = await client.get(f"/v1/messages/{message_id}")
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                if body["status"] in TERMINAL_STATUSES:
                    return body
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"message still {body['status']}: {body}")
                await asyncio.sleep(0.05)


async def _arq_worker(runtime: Runtime) -> Any:
    async def handler_factory() -> Any:
        async def noop() -> None:
            return None

        return runtime.process, noop

    settings = runtime.settings
    assert settings.redis_url is not None
    worker = build_worker(
        redis_url=settings.redis_url,
        queue_name=settings.queue.name,
        handler_factory=handler_factory,
        max_jobs=4,
        handle_signals=False,
    )
    worker.main_task = asyncio.create_task(worker.main())
    return worker


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> tuple[str, str, str | None]:
    """(name, database url, redis url): a fresh SQLite copy, or the session's PostgreSQL."""
    if request.param == "sqlite":
        db = tmp_path / "icc.db"
        shutil.copy(sqlite_template, db)
        return "sqlite", f"sqlite:///{db}", None
    pg: str = request.getfixturevalue("postgres_url")
    redis: str = request.getfixturevalue("redis_url")
    return "postgres", pg, redis


@pytest.fixture
async def platform(backend: tuple[str, str, str | None]) -> AsyncIterator[Platform]:
    """SQLite + in-process queue, or PostgreSQL + arq on Redis with a worker in this loop."""
    name, database_url, redis_url = backend
    scenario_service.clear_cache()
    patching.clear_cache()
    runtime = Runtime(make_settings(database_url, redis_url), run_workers=True)
    if name == "postgres":
        await truncate_all(runtime)
    await runtime.start()
    worker = await _arq_worker(runtime) if redis_url else None
    platform = Platform(name, runtime)
    await platform.create_keys()
    try:
        yield platform
    finally:
        if worker is not None:
            await stop_worker(worker)
        if runtime.redis is not None:  # the test's queue: nothing is left on the shared Redis
            name = runtime.settings.queue.name
            await runtime.redis.delete(name, f"{name}:health-check")
        await runtime.close()
        scenario_service.clear_cache()
        patching.clear_cache()


PHONE = {"phone": "13800001234"}


def send_body(**extra: Any) -> dict[str, Any]:
    """A POST /v1/messages body for the test scenario, to an unknown customer by phone."""
    return {
        "scenario": "account_movement",
        "customer_id": "C1",
        "variables": VARIABLES,
        "recipient": PHONE,
        **extra,
    }


async def count_messages(platform: Platform) -> int:
    async with platform.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)
