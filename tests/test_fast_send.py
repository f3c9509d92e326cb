"""POST /v1/messages beneath FastAPI (app/messages/fast_send.py): the same answers as the
FastAPI route, request by request, and the unusual requests handed to the route with their
body intact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import VARIABLES, Platform, count_messages, send_body

# fields of a 202 that differ from one message to the next
_FRESH = ("id", "created_at")


class Request:
    """One request, sent as given: ``content`` bytes and header values in which ``{run}`` is
    replaced by a mark of each sending (idempotency keys of their own, so the second sending
    is no replay of the first); ``routed``: the fast path hands it to the route."""

    def __init__(
        self,
        name: str,
        content: bytes | None = None,
        *,
        routed: bool = False,
        role: str | None = "system",
        headers: dict[str, str] | None = None,
        query: str = "",
        chunks: int = 1,
    ) -> None:
        self.name, self.routed, self.role, self.query = name, routed, role, query
        self.chunks = chunks
        self.content = orjson.dumps(send_body()) if content is None else content
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def __repr__(self) -> str:
        return self.name

    def made(self, run: str) -> tuple[bytes, dict[bytes, bytes]]:
        headers = {k.encode(): v.replace("{run}", run).encode() for k, v in self.headers.items()}
        return self.content.replace(b"{run}", run.encode()), headers


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


BIG = {**VARIABLES, "pad": "x" * 300_000}  # over the default limit of 256 KiB
SURROGATE = (
    b'{"scenario":"account_movement","customer_id":"C1","recipient":{"phone":"13800001234"},'
    b'"variables":{"account_tail":"\\ud800","amount":"1.00"}}'
)
REQUESTS = [
    Request("ordinary"),
    Request("utf-8 key header", headers={"Idempotency-Key": "订单-{run}"}),
    Request("key in the body", _json(send_body(idempotency_key="k-{run}"))),
    Request(
        "the same key twice",
        _json(send_body(idempotency_key="k-{run}")),
        headers={"Idempotency-Key": "k-{run}"},
    ),
    Request("charset parameter", headers={"Content-Type": "application/json; charset=utf-8"}),
    Request("admin may send", role="admin"),
    Request("in chunks", chunks=4),
    Request("send_at in the past", _json(send_body(send_at="2020-01-01T00:00:00+08:00"))),
    Request("channels given", _json(send_body(channels=["sms"]))),
    # refused by accepting itself: answered on the fast path, with the route's error bodies
    Request("unknown scenario", _json(send_body(scenario="nope"))),
    Request("missing variable", _json(send_body(variables={}))),
    Request(
        "no contact",
        _json({"scenario": "account_movement", "customer_id": "C4", "variables": VARIABLES}),
    ),
    Request("a channel without contact", _json(send_body(channels=["email"]))),
    # handed to the route
    Request(
        "body and header keys differ",
        _json(send_body(idempotency_key="a{run}")),
        headers={"Idempotency-Key": "b{run}"},
        routed=True,
    ),
    Request("unknown channel", _json(send_body(channels=["fax"])), routed=True),
    Request("empty key header", headers={"Idempotency-Key": ""}, routed=True),
    Request("long key header", headers={"Idempotency-Key": "k" * 201}, routed=True),
    Request("no key", role=None, routed=True),
    Request("unknown key", role="bogus", routed=True),
    Request("wrong role", role="marketer", routed=True),
    Request("unknown key and a bad body", b"{", role="bogus", routed=True),
    Request("not JSON", b"{not json", routed=True),
    Request("empty body", b"", routed=True),
    Request("JSON array", b"[]", routed=True),
    Request("not UTF-8", b'{"scenario": "\xff"}', routed=True),
    Request("lone surrogate", SURROGATE, routed=True),
    Request("NUL in a field", _json(send_body(customer_id="C\x001")), routed=True),
    Request("text/plain", headers={"Content-Type": "text/plain"}, routed=True),
    Request(
        "form content type",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        routed=True,
    ),
    Request("vendor +json", headers={"Content-Type": "application/vnd.icc+json"}, routed=True),
    Request("query string", query="?x=1", routed=True),
    Request("NUL in the query", query="?x=%00", routed=True),
    Request("over the size limit", _json(send_body(variables=BIG)), routed=True),
    Request("over the limit in chunks", _json(send_body(variables=BIG)), chunks=8, routed=True),
]


async def _chunks(content: bytes, count: int) -> AsyncIterator[bytes]:
    size = max(1, -(-len(content) // count))
    for start in range(0, len(content), size):
        yield content[start : start + size]


async def _send(platform: Platform, request: Request, run: str = "1") -> httpx.Response:
    body, headers = request.made(run)
    if request.role is not None:
        key = platform.keys.get(request.role, "icc_not-a-key")
        headers[b"Authorization"] = f"Bearer {key}".encode()
    transport = httpx.ASGITransport(app=platform.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://icc.test") as client:
        content: Any = body
        if request.chunks > 1:  # no Content-Length: the body comes in several ASGI messages
            content = _chunks(body, request.chunks)
        return await client.post("/v1/messages" + request.query, content=content, headers=headers)


def _comparable(response: httpx.Response) -> tuple[int, Any, list[bytes], str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code == 202:
        assert set(_FRESH) <= set(body), body
        body = {k: v for k, v in body.items() if k not in _FRESH}
    return (
        response.status_code,
        body,
        [name for name, _ in response.headers.raw],  # which headers, in which order
        response.headers.get("content-type"),
        response.headers.get("idempotency-replay"),
    )


class RouteCounter:
    """Counts the requests the fast path hands over to the FastAPI route."""

    def __init__(self, platform: Platform) -> None:
        fast = platform.app.fast_send
        assert fast is not None
        self.fast, self.route, self.count = fast, fast.route, 0

        async def counted(*args: Any) -> None:
            self.count += 1
            await self.route(*args)

        fast.route = counted

    def restore(self) -> None:
        self.fast.route = self.route


@pytest.fixture
def route_counter(platform: Platform) -> Iterator[RouteCounter]:
    counter = RouteCounter(platform)
    yield counter
    counter.restore()


@pytest.mark.parametrize("request_", REQUESTS, ids=repr)
async def test_the_fast_path_answers_as_the_route(
    platform: Platform, route_counter: RouteCounter, request_: Request
) -> None:
    """Each request twice with a key of its own in the customer id (a fresh message each
    time): once through the fast path, once through the FastAPI route alone. Same status,
    body (but the new id and time), content type and replay header; as many messages."""
    await platform.create_scenario()
    before = await count_messages(platform)
    fast = _comparable(await _send(platform, request_, "1"))
    fast_written = await count_messages(platform) - before
    handed_over = route_counter.count
    platform.app.fast_send = None
    try:
        routed = _comparable(await _send(platform, request_, "2"))
    finally:
        platform.app.fast_send = route_counter.fast
    assert fast == routed
    assert fast_written == await count_messages(platform) - before - fast_written
    assert handed_over == int(request_.routed), fast


async def test_a_replay_through_the_fast_path(
    platform: Platform, route_counter: RouteCounter
) -> None:
    await platform.create_scenario()
    request = Request("keyed", headers={"Idempotency-Key": "order-77"})
    first = await _send(platform, request)
    again = await _send(platform, request)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotency-replay"] == "true"
    assert "idempotency-replay" not in first.headers
    assert again.json()["id"] == first.json()["id"]
    other = await _send(
        platform,
        Request(
            "same key, other body",
            _json(send_body(customer_id="C2")),
            headers={"Idempotency-Key": "order-77"},
        ),
    )
    assert other.status_code == 409, other.text
    assert other.json()["error"] == "IdempotencyKeyReused"
    assert route_counter.count == 0
    assert await count_messages(platform) == 1


async def test_a_message_accepted_fast_is_sent(
    platform: Platform, route_counter: RouteCounter
) -> None:
    await platform.create_scenario()
    response = await _send(platform, Request("ordinary"))
    assert response.status_code == 202, response.text
    assert response.headers["content-length"] == str(len(response.content))
    message = await platform.wait_terminal(response.json()["id"])
    assert message["status"] in ("sent", "delivered")
    assert route_counter.count == 0


INTERNAL = {"error": "InternalError", "detail": "unexpected error; it has been logged"}


async def test_an_error_while_accepting_is_the_routes_500(
    platform: Platform, route_counter: RouteCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure after the request was taken in (nothing is handed over: it
    might have been accepted) gets the route's 500 body, and is raised on to the server (which
    logs it) as Starlette's ServerErrorMiddleware does on the route."""
    await platform.create_scenario()

    async def broken(_request: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(platform.runtime, "accept", broken)
    response = await _send(platform, Request("ordinary"))
    assert (response.status_code, response.json()) == (500, INTERNAL)
    assert route_counter.count == 0
    for fast in (route_counter.fast, None):
        platform.app.fast_send = fast
        transport = httpx.ASGITransport(app=platform.app)  # the server's view: raised
        async with httpx.AsyncClient(transport=transport, base_url="http://icc.test") as client:
            with pytest.raises(RuntimeError, match="went away"):
                await client.post(
                    "/v1/messages",
                    json=send_body(),
                    headers={"Authorization": f"Bearer {platform.keys['system']}"},
                )
    platform.app.fast_send = route_counter.fast


async def test_a_failed_key_lookup_is_answered_once(
    platform: Platform, route_counter: RouteCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key cannot be looked up (the database is down): the route's 500, after one lookup
    (handing over would have made a second)."""
    lookups = 0

    async def down(*_args: Any) -> Any:
        nonlocal lookups
        lookups += 1
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(platform.runtime.keys, "resolve", down)
    response = await _send(platform, Request("ordinary"))
    assert (response.status_code, response.json(), lookups) == (500, INTERNAL, 1)
    assert route_counter.count == 0


async def test_content_length_twice_goes_to_the_route(
    platform: Platform, route_counter: RouteCounter
) -> None:
    """BodySizeLimit reads the last Content-Length, Starlette's headers the first: a request
    with two is the route's (413 here, for the second)."""
    body = orjson.dumps(send_body())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "root_path": "",
        "query_string": b"",
        "server": ("icc.test", 80),
        "client": ("127.0.0.1", 1),
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {platform.keys['system']}".encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-length", b"999999999"),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await platform.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert route_counter.count == 1


def test_the_fast_path_knows_every_middleware(platform: Platform) -> None:
    """Sends on the fast path pass no middleware: they do what BodySizeLimit and RejectNul
    would do to them (tested above). A middleware added to the app must be mirrored in
    app/messages/fast_send.py, or the fast path turned off, before this list changes."""
    names = [m.cls.__name__ for m in platform.app.user_middleware]  # type: ignore[attr-defined]
    assert names == ["BodySizeLimit", "RejectNul"]
