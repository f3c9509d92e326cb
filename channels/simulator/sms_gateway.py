"""A stand-in for a bank's in-house SMS platform, for the generic HTTP gateway (``http_sms``):
``POST /gateway/sms`` takes a JSON body, ``GET /gateway/sms`` query parameters; both answer
``{"code": "0", "msg": "ok", "data": {"msgid": "..."}}`` (so the provider is configured with
``success_field = "code"``, ``success_value = "0"``, ``message_id_field = "data.msgid"``).

``force("1001")`` answers a business failure ``{"code": "1001", ...}`` with HTTP 200;
``force("http_503")`` answers that HTTP status. ``error_rate`` answers random HTTP 503s, and a
``token`` makes it require ``Authorization: Bearer <token>`` (HTTP 401 otherwise).
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from channels.simulator.faults import Faults


@dataclass(frozen=True)
class GatewayMessage:
    """One accepted request: its method, parameters (body or query) and headers."""

    method: str
    payload: dict[str, Any]
    headers: dict[str, str]
    msgid: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class SmsGatewaySimulator:
    """Fake in-house SMS gateway; see the module docstring."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
        token: str | None = None,
    ) -> None:
        self.faults = Faults(latency=latency, error_rate=error_rate, seed=seed)
        self.token = token
        self.received: list[GatewayMessage] = []

    def add_routes(self, app: web.Application, *, prefix: str = "/gateway") -> None:
        app.router.add_post(f"{prefix}/sms", self.handle)
        app.router.add_get(f"{prefix}/sms", self.handle)

    def force(self, code: str, count: int = 1) -> None:
        self.faults.force(code, count)

    async def handle(self, request: web.Request) -> web.Response:
        await self.faults.delay()
        if self.token is not None and not _bearer_ok(request, self.token):
            return _json({"code": "401", "msg": "bad token"}, status=401)
        code = self.faults.pick(["http_503"])
        if code is not None and code.startswith("http_"):
            return _json({"code": code, "msg": "forced"}, status=int(code[5:]))
        if code is not None:
            return _json({"code": code, "msg": "refused"})
        payload = await _payload(request)
        if payload is None:
            return _json({"code": "400", "msg": "body is not a JSON object"}, status=400)
        message = GatewayMessage(
            method=request.method,
            payload=payload,
            headers=dict(request.headers),
            msgid=uuid.uuid4().hex,
        )
        self.received.append(message)
        return _json({"code": "0", "msg": "ok", "data": {"msgid": message.msgid}})


async def _payload(request: web.Request) -> dict[str, Any] | None:
    if request.method == "GET":
        return dict(request.query)
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _bearer_ok(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _json(body: Any, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
