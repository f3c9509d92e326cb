"""CPU accounting for the benchmarks (Linux ``/proc``) and an optional py-spy recorder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from bench._support import REDIS_URL, BenchError

_TICK = os.sysconf("SC_CLK_TCK")
PY_SPY = os.environ.get("ICC_BENCH_PY_SPY") or shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuClock:
    """CPU seconds a process uses from now on."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = process_cpu(pid)

    def seconds(self) -> float:
        return process_cpu(self.pid) - self.start


class MachineClock:
    """The share of all CPUs busy from now on (any process)."""

    def __init__(self) -> None:
        self.start = _machine()

    def busy(self) -> float:
        busy, total = _machine()
        elapsed = total - self.start[1]
        return (busy - self.start[0]) / elapsed if elapsed > 0 else 0.0


class RedisCpu:
    """CPU seconds the Redis server used from now on (INFO cpu; every client counts)."""

    def __init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        self.start = self._now()

    def _now(self) -> float:
        info: dict[str, Any] = self.client.info("cpu")  # type: ignore[assignment]
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def seconds(self) -> float:
        try:
            return self._now() - self.start
        finally:
            self.client.close()


class Profiler:
    """``py-spy record`` (collapsed stacks, ``--nonblocking``) on a process while in the
    ``with`` block."""

    def __init__(self, pid: int, output: Path) -> None:
        if not Path(PY_SPY).exists():
            raise BenchError(f"py-spy not found at {PY_SPY} (set ICC_BENCH_PY_SPY)")
        self.argv = [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
        self.argv += ["--rate", "200", "--output", str(output)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
