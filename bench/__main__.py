"""Run the benchmarks, each in its own process: ``python -m bench [name ...]``.

Each benchmark runs its raw baseline beside the project's code in the same run and prints
both figures and their ratio; see bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = (
    "accept_single",
    "batch_postgres",
    "end_to_end",
    "email_pool",
    "sms_throughput",
    "customers_import",
    "strategies_accept",
    "decide_speed",
    "assignment_speed",
    "experiment_report",
)
TIMEOUT = 600.0  # seconds per benchmark; each takes about one to three minutes


def run(name: str) -> int:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}"])
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {TIMEOUT:.0f} s; stopping it", file=sys.stderr)
        proc.terminate()  # SIGTERM: the benchmark stops its processes and drops its database
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = 124
    except KeyboardInterrupt:
        proc.wait(60)  # Ctrl-C reached the benchmark too; let it clean up
        raise
    print(f"-- {name}: exit {code} after {time.monotonic() - started:.0f} s\n", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    names = parser.parse_args().names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    codes = {name: run(name) for name in names}
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
