"""Closed-loop HTTP load: wrk with a Lua script for POST bodies, or, where wrk is missing, the
asyncio client of bench._http (slower: it shares the 2 cores with the servers under test)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench._http import closed_loop, post_request
from bench._support import HOST, BenchError, percentile

CONNECTIONS = 32
MAX_REQUESTS = 250_000  # a safety bound per run; far above what a Python server answers in 10 s


@dataclass(frozen=True)
class LoadRun:
    ok: int  # 2xx responses
    other: int  # non-2xx responses
    errors: int  # connect/read/write errors and timeouts
    elapsed: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def hit_count_bound(self) -> bool:
        return self.ok + self.other >= MAX_REQUESTS


class LoadGenerator(Protocol):
    description: str

    def run(self, port: int, duration: float) -> LoadRun: ...


def _lua_string(text: str) -> str:
    level = "=" * 4
    if f"]{level}]" in text:
        raise ValueError("body contains the Lua long-bracket terminator")
    return f"[{level}[{text}]{level}]"


def _lua_script(path: str, bodies: Sequence[bytes], headers: Mapping[str, str]) -> str:
    body_list = ",\n  ".join(_lua_string(b.decode()) for b in bodies)
    header_table = ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items())
    return f"""
local bodies = {{
  {body_list}
}}
local headers = {{ ["Content-Type"] = "application/json", {header_table} }}
local requests = {{}}
local sent = 0

init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "{path}", headers, body)
  end
end

request = function()
  sent = sent + 1
  if sent > {MAX_REQUESTS} then wrk.thread:stop() end
  return requests[(sent % #requests) + 1]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests": %d, "duration_us": %d, "status": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Wrk:
    """wrk, 1 thread (the servers need the other core more than wrk does), 32 connections."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.description = f"wrk (1 thread, {CONNECTIONS} connections, Lua POST script)"

    def run(self, port: int, duration: float) -> LoadRun:
        argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--timeout", "10s"]
        argv += ["-s", str(self.script), f"http://{HOST}:{port}/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        lines = [x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")]
        if done.returncode != 0 or not lines:
            raise BenchError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
        data = json.loads(lines[-1].removeprefix("WRKJSON "))
        return LoadRun(
            ok=data["requests"] - data["status"],
            other=data["status"],
            errors=data["errors"],
            elapsed=data["duration_us"] / 1e6,
            p50=data["p50_us"] / 1e6,
            p99=data["p99_us"] / 1e6,
        )


class PythonLoad:
    """The fallback: the asyncio keep-alive client of bench._http in this process."""

    def __init__(self, requests: Sequence[bytes]) -> None:
        self.requests = list(requests)
        self.description = (
            f"FALLBACK Python asyncio client ({CONNECTIONS} connections; wrk missing or "
            "ICC_BENCH_LOAD=python; it shares this process and the CPUs: compare only ratios)"
        )

    def run(self, port: int, duration: float) -> LoadRun:
        result = asyncio.run(
            closed_loop(
                port,
                self.requests,
                connections=CONNECTIONS,
                duration=duration,
                max_requests=MAX_REQUESTS,
            )
        )
        ok = sum(n for status, n in result.statuses.items() if 200 <= status < 300)
        return LoadRun(
            ok=ok,
            other=sum(result.statuses.values()) - ok,
            errors=result.errors,
            elapsed=result.elapsed,
            p50=percentile(result.latencies, 50),
            p99=percentile(result.latencies, 99),
        )


def load_generator(
    workdir: Path, path: str, bodies: Sequence[bytes], headers: Mapping[str, str]
) -> LoadGenerator:
    """wrk if installed (and ICC_BENCH_LOAD is not ``python``), else the Python fallback."""
    if shutil.which("wrk") and os.environ.get("ICC_BENCH_LOAD", "wrk") != "python":
        script = workdir / "post.lua"
        script.write_text(_lua_script(path, bodies, headers), encoding="utf-8")
        return Wrk(script)
    return PythonLoad([post_request(path, b, headers) for b in bodies])
