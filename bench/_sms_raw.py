"""The baseline of bench.sms_throughput: a raw aiohttp client loop, in its own process.

It runs as ``icc worker`` runs, so that the comparison is of the code and not of the setting:
a fresh interpreter on uvloop, its start-up heap frozen out of the collector
(``app.gctune``). ``concurrency`` coroutines share one ``aiohttp.ClientSession`` with as many
connections; each posts the next body and reads its JSON answer. The bodies are the
``http_sms`` provider's default body for the same text (``raw_body``, checked byte for byte
against the provider's rendering before the first round), built before the loop starts.

    python -m bench._sms_raw --url URL --text-file F --messages N --concurrency C --result FILE

writes ``{"cpu": <CPU seconds of the loop>, "sent": N}`` to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson

from app.gctune import freeze_startup_heap
from app.ids import new_id


def phone(index: int) -> str:
    return f"139{index:08d}"


def raw_body(to: str, text: str, message_id: str) -> bytes:
    """The provider's default body template, written by hand: Jinja's ``tojson`` is
    ``json.dumps`` (ASCII escapes) for these strings, and the template's separators are
    json's defaults."""
    return json.dumps({"to": to, "text": text, "message_id": message_id, "sign": ""}).encode()


async def raw_loop(url: str, bodies: list[bytes], concurrency: int) -> None:
    """``concurrency`` coroutines over one aiohttp session with as many connections, each
    posting the next body and reading its JSON answer."""
    pending: Iterator[bytes] = iter(bodies)
    headers = {"Content-Type": "application/json"}
    failures: list[int] = []

    async def sender(session: aiohttp.ClientSession) -> None:
        for body in pending:
            async with session.post(url, data=body, headers=headers) as response:
                answer = orjson.loads(await response.read())
                if response.status != 200 or answer.get("code") != "0":
                    failures.append(response.status)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"baseline: {len(failures)} requests failed, e.g. HTTP {failures[0]}")


async def run(args: argparse.Namespace) -> None:
    text = Path(args.text_file).read_text(encoding="utf-8")
    bodies = [raw_body(phone(i), text, new_id("msg")) for i in range(args.messages)]
    freeze_startup_heap()
    started = time.process_time()
    await raw_loop(args.url, bodies, args.concurrency)
    cpu = time.process_time() - started
    Path(args.result).write_bytes(orjson.dumps({"cpu": cpu, "sent": len(bodies)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--text-file", required=True, help="the SMS text, UTF-8")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
