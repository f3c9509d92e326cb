"""Real ``icc worker`` processes for tests, and the arq keys they leave in Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from app.settings import Settings

ICC = Path(sys.executable).with_name("icc")
START_TIMEOUT = 30.0


def with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env.update(
        ICC_DATABASE_URL=settings.database_url,
        ICC_REDIS_URL=settings.redis_url or "",
        ICC_LOG_LEVEL="INFO",
        ICC_LOG_FORMAT="text",
        PYTHONUNBUFFERED="1",
    )
    if settings.providers_file:
        env["ICC_PROVIDERS_FILE"] = settings.providers_file
    for field, value in settings.queue.model_dump().items():
        env[f"ICC_QUEUE__{field.upper()}"] = str(value)
    return env


class Workers:
    """``icc worker`` subprocesses, logging to files; all killed at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, settings: Settings) -> subprocess.Popen[bytes]:
        if not ICC.exists():
            pytest.fail(f"no icc console script next to {sys.executable}; pip install -e .")
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            [str(ICC), "worker"],
            env=worker_env(settings),
            cwd=self.log_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def tails(self, lines: int = 25) -> str:
        out = []
        for index, proc in enumerate(self.procs):
            path = self.log_dir / f"worker-{index}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- worker {index} (exit {proc.poll()}), {path}:\n" + "\n".join(text))
        return "\n".join(out)

    def check_alive(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            pytest.fail(f"icc worker exited with {proc.returncode}\n{self.tails()}")

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        for log in self.logs:
            log.close()


async def forget_queue(redis: aioredis.Redis, name: str) -> None:
    """Remove this test's arq keys, leaving the rest of the Redis database alone."""
    jobs = [j.decode() for j in await redis.zrange(name, 0, -1)]
    kinds = ("job", "in-progress", "retry", "result")
    await redis.delete(name, f"{name}:health-check", *(f"arq:{k}:{j}" for j in jobs for k in kinds))


async def wait_until_ready(
    redis: aioredis.Redis, settings: Settings, workers: Workers, proc: subprocess.Popen[bytes]
) -> None:
    """arq writes its health-check key once start-up is done and it polls the queue."""
    key = f"{settings.queue.name}:health-check"
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while not await redis.exists(key):
        workers.check_alive(proc)
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"icc worker not ready after {START_TIMEOUT:.0f}s\n{workers.tails()}")
        await asyncio.sleep(0.05)
