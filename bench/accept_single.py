"""Benchmark 1: single ``POST /v1/messages`` on the embedded default, 32 connections.

Compares, in the same run, alternating rounds under the same load generator and bodies:

- project: ``icc serve`` as a uvicorn process on the embedded default (SQLite file in WAL mode,
  in-process queue and consumers that also send what is accepted), seeded by ``icc demo``;
- baseline: a bare FastAPI endpoint taking the same pydantic body (bench/_bare_app.py), one
  uvicorn process.

Figures: accepted messages/s (for the project: rows committed to the database per second of
load, checked in the SQLite file, since the API answers before its transaction commits),
client-side p50/p99, and project/baseline (target >= 0.5x).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench._cpu import CpuClock
from bench._load import LoadGenerator, LoadRun, load_generator
from bench._support import (
    HOST,
    VARIABLES,
    BenchError,
    Child,
    Workspace,
    child_env,
    demo_key,
    free_port,
    header,
    icc_command,
    median,
    ms,
    ratio_text,
    report_logged_errors,
    row,
    run_main,
    wait_http_ready,
    workspace,
)

ROUNDS = 3
DURATION = 10.0  # seconds of measured load per round and server
WARMUP = 2.0
TARGET = 0.5
CUSTOMERS = ("C0001", "C0002", "C0003")  # seeded by icc demo


def request_bodies() -> list[bytes]:
    return [
        orjson.dumps({"scenario": "account_movement", "customer_id": c, "variables": VARIABLES})
        for c in CUSTOMERS
    ]


class SqliteProbe:
    """Reads the project's SQLite file (WAL: readers never block the server)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self, table: str) -> int:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            value: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return value

    def wait_idle(self, timeout: float = 180) -> float:
        """Wait until everything accepted has been sent (empty outbox); seconds waited."""
        started = time.monotonic()
        while self.count("outbox") > 0:
            if time.monotonic() - started > timeout:
                raise BenchError(f"the project did not send its backlog within {timeout:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - started

    def wait_committed(self, at_least: int, since: float, timeout: float = 60) -> tuple[int, float]:
        """Poll the message count until it reaches ``at_least`` and holds still for 0.3 s;
        return it and the seconds from ``since`` to its last change."""
        last, changed = self.count("messages"), time.monotonic()
        while time.monotonic() - changed < 0.3 or last < at_least:
            if time.monotonic() - since > timeout:
                break
            time.sleep(0.02)
            current = self.count("messages")
            if current != last:
                last, changed = current, time.monotonic()
        return last, max(0.0, changed - since)


@dataclass(frozen=True)
class ProjectRun:
    load: LoadRun
    committed: int
    drain: float  # seconds after the load until the last commit
    backlog: int  # accepted but not yet sent when the load stopped
    cpu_ms: float | None = None  # the server's CPU milliseconds per committed message

    @property
    def rate(self) -> float:
        return self.committed / (self.load.elapsed + self.drain)


def describe(load: LoadRun) -> str:
    text = f"{load.rate:8.0f} 2xx/s  p50 {ms(load.p50):>9}  p99 {ms(load.p99):>9}"
    if load.other or load.errors:
        text += f"  non-2xx {load.other}, socket errors {load.errors}"
    if load.hit_count_bound:
        text += "  (count bound reached: rate understated)"
    return text


@dataclass(frozen=True)
class BareRun:
    load: LoadRun
    cpu_ms: float | None  # the server's CPU milliseconds per answered request

    @property
    def rate(self) -> float:
        return self.load.rate


def run_bare(loader: LoadGenerator, bare_port: int, *, pid: int | None = None) -> BareRun:
    loader.run(bare_port, WARMUP)
    clock = CpuClock(pid) if pid is not None else None
    load = loader.run(bare_port, DURATION)
    cpu_ms = clock.seconds() * 1000 / load.ok if clock is not None and load.ok else None
    return BareRun(load, cpu_ms)


def run_project(
    loader: LoadGenerator, icc_port: int, probe: SqliteProbe, *, pid: int | None = None
) -> ProjectRun:
    """One measured round; ``pid``: also the CPU the server used per committed message
    (from the end of the warm-up to the last commit), which a busy machine disturbs less
    than the rate."""
    loader.run(icc_port, WARMUP)
    probe.wait_idle()
    before = probe.count("messages")
    clock = CpuClock(pid) if pid is not None else None
    load = loader.run(icc_port, DURATION)
    ended = time.monotonic()
    backlog = probe.count("outbox")
    total, drain = probe.wait_committed(before + load.ok, since=ended)
    committed = total - before
    cpu_ms = clock.seconds() * 1000 / committed if clock is not None and committed else None
    return ProjectRun(load, committed, drain, backlog, cpu_ms)


def _cpu(cpu_ms: float | None) -> str:
    return "" if cpu_ms is None else f", CPU {cpu_ms:.3f} ms/msg"


def report(bare: list[BareRun], project: list[ProjectRun]) -> None:
    for index, (b, p) in enumerate(zip(bare, project, strict=True), start=1):
        row(f"round {index}  bare FastAPI", describe(b.load) + _cpu(b.cpu_ms))
        row(f"round {index}  icc serve (embedded)", describe(p.load) + _cpu(p.cpu_ms))
        lost = p.load.ok - p.committed
        row(
            "          committed to SQLite",
            f"{p.committed} rows, last commit {p.drain:.2f} s after the load "
            f"-> {p.rate:.0f} msg/s; send backlog at end {p.backlog}"
            + (f"; {lost} answered 202 but NOT committed" if lost > 0 else ""),
        )
    bare_rate = median([b.rate for b in bare])
    project_rate = median([p.rate for p in project])
    print()
    bare_p99 = ms(median([b.load.p99 for b in bare]))
    row("bare FastAPI (median)", f"{bare_rate:.0f} req/s, p99 {bare_p99}")
    row(
        "icc serve accepted (median)",
        f"{project_rate:.0f} msg/s, p50 {ms(median([p.load.p50 for p in project]))}, "
        f"p99 {ms(median([p.load.p99 for p in project]))}",
    )
    row("ratio icc / bare", ratio_text(project_rate, bare_rate, target=TARGET))
    bare_cpu = [b.cpu_ms for b in bare if b.cpu_ms is not None]
    icc_cpu = [p.cpu_ms for p in project if p.cpu_ms is not None]
    if bare_cpu and icc_cpu:
        # what a busy machine disturbs less than the rates: each server's own CPU per message
        # (the project's includes sending what it accepted)
        b_cpu, i_cpu = median(bare_cpu), median(icc_cpu)
        row(
            "server CPU per message (median)",
            f"bare {b_cpu:.3f} ms, icc {i_cpu:.3f} ms: bare/icc {b_cpu / i_cpu:.3f}",
        )


@dataclass(frozen=True)
class Servers:
    icc: Child
    bare: Child
    icc_port: int
    bare_port: int
    key: str  # the demo system key


def start_servers(ws: Workspace, db: Path) -> Servers:
    env = child_env(ICC_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    key = demo_key(ws, env)
    icc_port, bare_port = free_port(), free_port()
    icc = ws.spawn("icc-serve", [*icc_command(), "serve", "--port", str(icc_port)], env=env)
    bare_argv = [sys.executable, "-m", "uvicorn", "bench._bare_app:app", "--host", HOST]
    bare_argv += ["--port", str(bare_port), "--no-access-log", "--log-level", "warning"]
    bare = ws.spawn("bare-fastapi", bare_argv, env=child_env())
    wait_http_ready(icc, icc_port, path="/readyz")
    wait_http_ready(bare, bare_port)
    ws.stack.callback(report_logged_errors, [icc])
    return Servers(icc, bare, icc_port, bare_port, key)


def body() -> None:
    with workspace("accept") as ws:
        db = ws.path / "icc.db"
        servers = start_servers(ws, db)
        headers = {"Authorization": f"Bearer {servers.key}"}
        loader = load_generator(ws.path, "/v1/messages", request_bodies(), headers)
        header(
            "accept_single: POST /v1/messages, embedded default (SQLite + in-process queue)",
            f"load: {loader.description}; {ROUNDS} alternating rounds of {DURATION:g} s "
            f"(after {WARMUP:g} s warm-up) per server",
        )
        bare_runs: list[BareRun] = []
        project_runs: list[ProjectRun] = []
        probe = SqliteProbe(db)
        for _ in range(ROUNDS):
            probe.wait_idle()  # the project's senders must not run beside the baseline
            bare_runs.append(run_bare(loader, servers.bare_port, pid=servers.bare.proc.pid))
            project_runs.append(
                run_project(loader, servers.icc_port, probe, pid=servers.icc.proc.pid)
            )
            servers.icc.check_alive()
        report(bare_runs, project_runs)


def main() -> int:
    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
