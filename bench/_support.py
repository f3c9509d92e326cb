"""Plumbing shared by the benchmarks: child processes, temp dirs, PostgreSQL databases, Redis
queues, percentiles and report lines. Nothing in here is what a benchmark measures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # every benchmark stays on the loopback interface
POSTGRES_ADMIN_URL = os.environ.get(
    "ICC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ICC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
KEEP_TMP = os.environ.get("ICC_BENCH_KEEP_TMP", "") not in ("", "0")

# The demo scenario's variables (app/demo.py: account_movement).
VARIABLES = {
    "account_tail": "1234",
    "direction": "支出",
    "amount": "1200.00",
    "balance": "35200.50",
}


class BenchError(RuntimeError):
    """A benchmark could not run (a service is missing, a child process died...)."""


def run_main(body: Callable[[], None]) -> int:
    """Run a benchmark's body; SIGTERM unwinds it like Ctrl-C so that cleanup still runs."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        body()
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        return 130
    return 0


def header(title: str, detail: str) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"== {title} ==")
    print(f"   {detail}")
    print(f"   machine: {os.cpu_count()} CPUs, load average {load} at start\n", flush=True)


def row(label: str, value: str) -> None:
    print(f"   {label:<40} {value}", flush=True)


def ratio_text(value: float, baseline: float, *, target: float | None = None) -> str:
    """``value / baseline`` with the verdict against an optional target (higher is better)."""
    if baseline <= 0:
        return "n/a (baseline is zero)"
    ratio = value / baseline
    if target is None:
        return f"{ratio:.3f}x"
    verdict = "meets" if ratio >= target else "BELOW"
    return f"{ratio:.3f}x ({verdict} target >= {target}x)"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ICC_* setting, plus ``settings``; the repository
    root goes on PYTHONPATH so that children can import the bench package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def icc_command() -> list[str]:
    """The ``icc`` console script of the interpreter running the benchmark."""
    script = Path(sys.executable).with_name("icc")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


def _readable(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    text = f"{record.get('level', '')} {record.get('logger', '')}: {record.get('message', '')}"
    return text + (f"\n{record['exc']}" if record.get("exc") else "")


class Child:
    """A child process writing to a log file, stopped through its own pid only."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, logs: Path
    ) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the child ourselves
            )

    def tail(self, lines: int = 30) -> str:
        """The end of the log, JSON log records shown as text with their tracebacks."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        readable = "\n".join(_readable(line) for line in text.splitlines()[-lines:])
        return "\n".join(readable.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}; its log ends:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def report_logged_errors(children: Sequence[Child]) -> None:
    """Point at errors the project logged during the run (they may explain a slow figure)."""
    for child in children:
        lines = child.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [x for x in lines if '"level":"ERROR"' in x or "Traceback" in x]
        if errors:
            print(f"   note: {child.name} logged {len(errors)} errors; first: {errors[0][:300]}")


class Workspace:
    """A temp dir plus everything to undo when the benchmark ends, failed or not."""

    def __init__(self, stack: ExitStack, path: Path) -> None:
        self.stack = stack
        self.path = path
        self.logs = path / "logs"
        self.logs.mkdir()

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str]) -> Child:
        child = Child(name, argv, env=env, cwd=self.path, logs=self.logs)
        self.stack.callback(child.stop)
        return child

    def run(self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 120) -> str:
        """Run a command to completion in the workspace; its output on success."""
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout


@contextmanager
def workspace(prefix: str) -> Iterator[Workspace]:
    with ExitStack() as stack:
        path = Path(tempfile.mkdtemp(prefix=f"icc-bench-{prefix}-"))
        if KEEP_TMP:
            stack.callback(print, f"(kept {path})")
        else:
            stack.callback(shutil.rmtree, path, ignore_errors=True)
        yield Workspace(stack, path)


def demo_key(ws: Workspace, env: Mapping[str, str]) -> str:
    """Seed the demo data with ``icc demo`` (cwd: the workspace) and return the system key."""
    ws.run([*icc_command(), "demo"], env=env)
    return demo_keys_file(ws.path, "DEMO_CORE_BANKING_KEY")


def demo_keys_file(path: Path, name: str) -> str:
    """A key that ``icc demo`` wrote to ``var/demo-keys.env`` under ``path``."""
    for line in (path / "var" / "demo-keys.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value
    raise BenchError(f"icc demo wrote no {name}")


def wait_http_ready(
    child: Child, port: int, *, path: str = "/healthz", timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        url = f"http://{HOST}:{port}{path}"
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{child.name} did not answer {path} within {timeout:.0f} s:\n{child.tail()}")


# --- PostgreSQL ------------------------------------------------------------------------------


def _with_database(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def _admin_execute(sql: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}") from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh database for one run (plain postgresql:// URL), dropped at the end."""
    name = unique_name(prefix)
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- Redis / arq -----------------------------------------------------------------------------


def check_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {REDIS_URL} is not reachable: {exc}") from exc


def purge_arq_queue(queue_name: str) -> None:
    """Delete one arq queue and the keys of the jobs still in it (nothing else)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        members = cast(list[bytes], client.zrange(queue_name, 0, -1))
        job_ids = [m.decode() for m in members]
        keys = [queue_name, f"{queue_name}:health-check"]
        for kind in ("job", "in-progress", "retry", "result"):
            keys += [f"arq:{kind}:{job_id}" for job_id in job_ids]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def wait_arq_worker(child: Child, queue_name: str, *, timeout: float = 60) -> None:
    """Wait until an arq worker on ``queue_name`` has written its first health check."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            child.check_alive()
            if client.exists(f"{queue_name}:health-check"):
                return
            time.sleep(0.01)  # a worker with jobs waiting starts on them at once
    finally:
        client.close()
    raise BenchError(f"{child.name} did not start within {timeout:.0f} s:\n{child.tail()}")
