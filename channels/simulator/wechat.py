"""A local fake of the WeChat Official Account API (aiohttp) for tests, the demo and benchmarks.

It serves ``GET /cgi-bin/token``, ``POST /cgi-bin/stable_token`` and
``POST /cgi-bin/message/template/send`` with WeChat's JSON answers and errcodes: it checks the
app's credentials and the access_token (unknown: 40001, expired: 42001), the body fields
(openid 40003, template 40037, data 47003), dedups on openid + client_msg_id like WeChat, and
records accepted sends. It can be told to be slow, to fail at random (45009 / -1), to answer the
next N sends (or token requests) with given errcodes, to fail given openids always (43004 for a
user who does not follow), and to invalidate or expire every token. After an accepted send it
can push the TEMPLATESENDJOBFINISH event back to a callback URL, signed with the callback token
as WeChat signs.

Use ``add_routes(app)`` to serve it beside other simulators (the ``icc simulator`` server), or
``await start()`` to serve it alone on a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from channels.wechat_events import wechat_signature

log = logging.getLogger("icc.simulator.wechat")

HOST = "127.0.0.1"
DEFAULT_APPS = {"wx5im0000000000001": "simulator-app-secret"}
TOKEN_GRACE = 300.0  # a replaced client_credential token stays valid this long, as at WeChat
DEDUP_SECONDS = 600.0  # WeChat: one message per openid + client_msg_id within 10 minutes
OPENID = re.compile(r"^[A-Za-z0-9_-]{28}$")
RANDOM_ERRORS = ((45009, "reach max api daily quota limit"), (-1, "system error"))
ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    42001: "access_token expired",
    43004: "require subscribe",
    43019: "require remove blacklist",
    43101: "user refuse to accept the msg",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    47003: "argument invalid!",
}


def openid_for(seed: str | int) -> str:
    """A well-formed 28-character openid, stable for the same seed (for tests and demos)."""
    return ("o" + f"{seed}".replace(" ", "_")).ljust(28, "X")[:28]


def template_event_xml(*, openid: str, msgid: int, status: str, account: str = "gh_sim") -> str:
    """The TEMPLATESENDJOBFINISH event WeChat pushes once a template message is through."""
    return (
        f"<xml><ToUserName><![CDATA[{account}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        f"<MsgID>{msgid}</MsgID><Status><![CDATA[{status}]]></Status></xml>"
    )


def signed_query(token: str) -> dict[str, str]:
    """signature, timestamp and nonce, as WeChat adds them to every push."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    signature = wechat_signature(token, timestamp, nonce)
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce}


@dataclass(frozen=True)
class TemplateSend:
    """One accepted template message."""

    msgid: int
    app_id: str
    touser: str
    template_id: str
    data: dict[str, Any]
    client_msg_id: str | None
    url: str | None = None
    miniprogram: dict[str, Any] | None = None


@dataclass
class _Token:
    app_id: str
    expires_at: float


class _Answer(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "simulated error")


@dataclass
class _Pushes:
    """Where and how the TEMPLATESENDJOBFINISH events go."""

    url: str | None
    token: str | None
    delay: float
    status: dict[str, str] = field(default_factory=dict)  # per openid; default "success"
    answers: list[int] = field(default_factory=list)  # HTTP status of each push


class WeChatSimulator:
    """The fake WeChat API. ``apps`` maps appid → secret; ``templates`` (if given) are the only
    valid template ids. Counters: ``token_requests``, ``send_requests``, ``accepted``,
    ``duplicates``; accepted sends are in ``sent`` unless ``record`` is False."""

    def __init__(
        self,
        *,
        apps: Mapping[str, str] | None = None,
        templates: Collection[str] | None = None,
        token_ttl: int = 7200,
        latency: float = 0.0,
        error_rate: float = 0.0,
        callback_url: str | None = None,
        callback_token: str | None = None,
        callback_delay: float = 0.0,
        record: bool = True,
        seed: int | None = None,
    ) -> None:
        self.apps = dict(apps if apps is not None else DEFAULT_APPS)
        self.templates = set(templates) if templates is not None else None
        self.token_ttl = token_ttl
        self.latency = latency
        self.error_rate = error_rate
        self.record = record
        self.pushes = _Pushes(callback_url, callback_token, callback_delay)
        self.openid_errors: dict[str, int] = {}
        self.sent: list[TemplateSend] = []
        self.token_requests = self.send_requests = self.accepted = self.duplicates = 0
        self.url = ""
        self._random = random.Random(seed)
        self._msgids = itertools.count(2_000_000_001)
        self._tokens: dict[str, _Token] = {}
        self._stable: dict[str, str] = {}  # appid → its current stable token
        self._forced: deque[int] = deque()
        self._forced_token: deque[int] = deque()
        self._dedup: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # -- control ----------------------------------------------------------------------------

    def force_errors(self, errcode: int, *, times: int = 1) -> None:
        """Answer the next ``times`` template sends with ``errcode``."""
        self._forced.extend([errcode] * times)

    def force_token_errors(self, errcode: int, *, times: int = 1) -> None:
        """Answer the next ``times`` token requests (either endpoint) with ``errcode``."""
        self._forced_token.extend([errcode] * times)

    def fail_openid(self, openid: str, errcode: int = 43004) -> None:
        """Answer every send to ``openid`` with ``errcode`` (43004: does not follow)."""
        self.openid_errors[openid] = errcode

    def set_delivery_status(self, openid: str, status: str) -> None:
        """The Status pushed for ``openid``: "success", "failed:user block", ...."""
        self.pushes.status[openid] = status

    def invalidate_tokens(self) -> None:
        """Forget every token issued: the next send with one gets 40001."""
        self._tokens.clear()
        self._stable.clear()

    def expire_tokens(self) -> None:
        """Expire every token issued: the next send with one gets 42001."""
        for token in self._tokens.values():
            token.expires_at = 0.0
        self._stable.clear()

    # -- serving ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, prefix: str = "") -> None:
        """Serve the API under ``prefix`` (the provider's endpoint is then base URL + prefix)."""
        app.router.add_get(f"{prefix}/cgi-bin/token", self._token)
        app.router.add_post(f"{prefix}/cgi-bin/stable_token", self._stable_token)
        app.router.add_post(f"{prefix}/cgi-bin/message/template/send", self._template_send)
        app.on_cleanup.append(lambda _app: self.close())

    def make_app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app

    async def start(self, host: str = HOST, port: int = 0) -> str:
        """Serve alone on ``host``:``port`` (0: any free port); returns the base URL."""
        # No access log: WeChat puts the secret and the access_token in the query string.
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # runs close() through on_cleanup
            self._runner = None

    async def close(self) -> None:
        """Stop pending pushes and release the push client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_pushes(self, timeout: float = 5.0) -> None:
        """Wait until every scheduled callback push is done (tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    # -- handlers ---------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        query = request.query
        return await self._answer_token(
            query.get("grant_type"), query.get("appid"), query.get("secret"), stable=False
        )

    async def _stable_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _json(_error(_Answer(47001)))
        if not isinstance(body, dict):
            return _json(_error(_Answer(47001)))
        grant, appid, secret = body.get("grant_type"), body.get("appid"), body.get("secret")
        force = body.get("force_refresh") is True
        return await self._answer_token(grant, appid, secret, stable=True, force=force)

    async def _answer_token(
        self, grant: Any, appid: Any, secret: Any, *, stable: bool, force: bool = False
    ) -> web.Response:
        await self._delay()
        self.token_requests += 1
        try:
            self._check_credentials(grant, appid, secret)
        except _Answer as answer:
            return _json(_error(answer))
        token = self._stable_for(str(appid), force) if stable else self._issue(str(appid))
        expires_in = max(int(self._tokens[token].expires_at - time.time()), 0)
        return _json({"access_token": token, "expires_in": expires_in})

    def _check_credentials(self, grant: Any, appid: Any, secret: Any) -> None:
        if self._forced_token:
            raise _Answer(self._forced_token.popleft())
        if grant != "client_credential":
            raise _Answer(40002)
        if appid not in self.apps:
            raise _Answer(40013)
        if not isinstance(secret, str) or secret != self.apps[appid]:
            raise _Answer(40125)

    def _issue(self, appid: str) -> str:
        now = time.time()
        for old in self._tokens.values():  # the previous tokens live on for a grace period
            if old.app_id == appid:
                old.expires_at = min(old.expires_at, now + TOKEN_GRACE)
        token = f"SIM_{secrets.token_urlsafe(24)}"
        self._tokens[token] = _Token(appid, now + self.token_ttl)
        return token

    def _stable_for(self, appid: str, force: bool) -> str:
        current = self._stable.get(appid)
        usable = current in self._tokens and self._tokens[current].expires_at > time.time()
        if current is None or force or not usable:
            if current is not None:
                self._tokens.pop(current, None)  # force_refresh ends the previous one at once
            token = f"SIM_{secrets.token_urlsafe(24)}"
            self._tokens[token] = _Token(appid, time.time() + self.token_ttl)
            self._stable[appid] = token
        return self._stable[appid]

    async def _template_send(self, request: web.Request) -> web.Response:
        await self._delay()
        self.send_requests += 1
        try:
            appid = self._check_token(request.query.get("access_token"))
            body = await _json_body(request)
            result = self._accept(appid, body)
        except _Answer as answer:
            return _json(_error(answer))
        return _json({"errcode": 0, "errmsg": "ok", "msgid": result})

    def _check_token(self, token: str | None) -> str:
        if self._forced:
            raise _Answer(self._forced.popleft())
        if not token:
            raise _Answer(41001)
        issued = self._tokens.get(token)
        if issued is None:
            raise _Answer(40001)
        if issued.expires_at <= time.time():
            raise _Answer(42001)
        return issued.app_id

    def _accept(self, appid: str, body: dict[str, Any]) -> int:
        send = _validated(body, self.templates)
        if send["touser"] in self.openid_errors:
            raise _Answer(self.openid_errors[send["touser"]])
        if self.error_rate and self._random.random() < self.error_rate:
            raise _Answer(*self._random.choice(RANDOM_ERRORS))
        now = time.time()
        self._forget_old_sends(now)
        key = (appid, send["touser"], send["client_msg_id"] or "")
        earlier = self._dedup.get(key) if send["client_msg_id"] else None
        if earlier is not None:
            self.duplicates += 1
            return earlier[0]
        msgid = next(self._msgids)
        self._dedup[key] = (msgid, now + DEDUP_SECONDS)
        self.accepted += 1
        if self.record:
            self.sent.append(TemplateSend(msgid=msgid, app_id=appid, **send))
        self._schedule_push(send["touser"], msgid)
        return msgid

    def _forget_old_sends(self, now: float) -> None:
        # Entries are in insertion order with one window, so the expired ones lead; a
        # benchmark's millions of sends must not pile up here.
        while self._dedup:
            key, (_, until) = next(iter(self._dedup.items()))
            if until > now:
                return
            del self._dedup[key]

    # -- pushes -----------------------------------------------------------------------------

    def _schedule_push(self, openid: str, msgid: int) -> None:
        if not (self.pushes.url and self.pushes.token):
            return
        task = asyncio.get_running_loop().create_task(self._push(openid, msgid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, openid: str, msgid: int) -> None:
        assert self.pushes.url is not None
        assert self.pushes.token is not None
        await asyncio.sleep(self.pushes.delay)
        status = self.pushes.status.get(openid, "success")
        body = template_event_xml(openid=openid, msgid=msgid, status=status)
        params = {**signed_query(self.pushes.token), "openid": openid}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(
                self.pushes.url, params=params, data=body, headers={"Content-Type": "text/xml"}
            ) as response:
                self.pushes.answers.append(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("wechat simulator: push failed (%s)", type(exc).__name__)

    async def _delay(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _Answer(47001) from None
    if not isinstance(body, dict):
        raise _Answer(47001)
    return body


def _validated(body: dict[str, Any], templates: set[str] | None) -> dict[str, Any]:
    touser, template_id = body.get("touser"), body.get("template_id")
    if not isinstance(touser, str) or not OPENID.match(touser):
        raise _Answer(40003)
    if not isinstance(template_id, str) or not template_id:
        raise _Answer(40037)
    if templates is not None and template_id not in templates:
        raise _Answer(40037)
    data = body.get("data")
    if not isinstance(data, dict) or not all(_valid_field(v) for v in data.values()):
        raise _Answer(47003, "argument invalid! data.value invalid")
    miniprogram = body.get("miniprogram")
    if miniprogram is not None and not (
        isinstance(miniprogram, dict) and miniprogram.get("appid") and miniprogram.get("pagepath")
    ):
        raise _Answer(47003, "argument invalid! miniprogram invalid")
    client_msg_id = body.get("client_msg_id")
    url = body.get("url")
    return {
        "touser": touser,
        "template_id": template_id,
        "data": data,
        "client_msg_id": str(client_msg_id) if client_msg_id else None,
        "url": url if isinstance(url, str) else None,
        "miniprogram": miniprogram,
    }


def _valid_field(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("value"), str)


def _error(answer: _Answer) -> dict[str, Any]:
    rid = secrets.token_hex(4)
    return {"errcode": answer.errcode, "errmsg": f"{answer.errmsg} rid: {rid}"}


def _json(payload: dict[str, Any]) -> web.Response:
    # WeChat answers errors with HTTP 200 too: the errcode is the status.
    return web.json_response(payload)
