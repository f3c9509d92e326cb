"""The SMS gateway simulator of bench.sms_throughput, in its own process, with counters;
and ``Gateway``, the benchmark's view of it.

The project's simulator (``channels.simulator.sms_gateway.SmsGatewaySimulator``: no latency,
no errors) serves ``POST /gateway/sms`` on aiohttp; this runner adds what the benchmark reads:

- ``GET /stats``: requests answered since the last reset, the monotonic time of the first and
  the last, the client connections they came over, and this process's CPU seconds;
- ``POST /reset``: zero the counters (and forget the simulator's received messages).

Both sides of the benchmark are timed here, the same way. The loop is uvloop:
the simulator is not what is measured, so it should be as fast as it can be.

    python -m bench._sms_gateway --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvloop  # comes with uvicorn[standard]
from aiohttp import web

from bench._support import BenchError
from channels.simulator.sms_gateway import SmsGatewaySimulator


class CountingGateway:
    """Wraps the simulator's handler: counts answers and the connections they used."""

    def __init__(self) -> None:
        self.gateway = SmsGatewaySimulator()
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.ok = 0
        self.first = 0.0
        self.last = 0.0
        self.peers: set[Any] = set()
        self.gateway.received.clear()

    async def handle(self, request: web.Request) -> web.Response:
        response = await self.gateway.handle(request)
        now = time.monotonic()
        if self.count == 0:
            self.first = now
        self.last = now
        self.count += 1
        self.ok += response.status == 200
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        # the simulator keeps every message; the benchmark only needs the counters
        self.gateway.received.clear()
        return response

    async def stats(self, request: web.Request) -> web.Response:
        body = {
            "count": self.count,
            "ok": self.ok,
            "first": self.first,
            "last": self.last,
            "connections": len(self.peers),
            "cpu": time.process_time(),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def reset_route(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(text="ok")


@dataclass(frozen=True)
class GatewayStats:
    count: int
    span: float  # first answer to last answer, seconds
    connections: int
    cpu: float  # simulator CPU seconds in the round

    @property
    def rate(self) -> float:
        return self.count / self.span if self.span > 0 else 0.0


class Gateway:
    """The simulator process, seen through its counters."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = f"{base_url}/gateway/sms"
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self._cpu = 0.0

    async def reset(self) -> None:
        await self.http.post("/reset")
        self._cpu = (await self.http.get("/stats")).json()["cpu"]

    async def count(self) -> int:
        return int((await self.http.get("/stats")).json()["count"])

    async def stats(self) -> GatewayStats:
        s = (await self.http.get("/stats")).json()
        if s["ok"] != s["count"]:
            raise BenchError(f"the simulator refused {s['count'] - s['ok']} requests")
        span = float(s["last"]) - float(s["first"])
        return GatewayStats(s["count"], span, s["connections"], s["cpu"] - self._cpu)


async def serve(host: str, port: int) -> None:
    counting = CountingGateway()
    app = web.Application()
    app.router.add_post("/gateway/sms", counting.handle)
    app.router.add_get("/stats", counting.stats)
    app.router.add_post("/reset", counting.reset_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    print(f"sms gateway simulator on http://{host}:{port}/gateway/sms", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
