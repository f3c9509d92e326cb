"""The SMS adapters' HTTP client (channels.http.HttpClient) against local servers: requests
go out exactly as built, and it keeps what the httpx client gave: timeouts, the connection
limit, verified TLS and proxies from the environment."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.http import HttpClient, build_request, host_header, raw_path


class Seen:
    """What the server received: raw request targets, Host headers, bodies, peers."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.hosts: list[str] = []
        self.bodies: list[bytes] = []
        self.peers: set[object] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.targets.append(request.raw_path)
            self.hosts.append(request.headers.get("Host", ""))
            self.bodies.append(await request.read())
            if request.transport is not None:
                self.peers.add(request.transport.get_extra_info("peername"))
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1


async def serve(seen: Seen, ssl_context: ssl.SSLContext | None = None) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", seen.handle)
    server = TestServer(app, host="127.0.0.1", scheme="https" if ssl_context else "http")
    await server.start_server(ssl=ssl_context)
    return server


@pytest.fixture
async def seen() -> AsyncIterator[tuple[Seen, TestServer]]:
    recorder = Seen()
    server = await serve(recorder)
    try:
        yield recorder, server
    finally:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(timeout=5, max_connections=10)
    try:
        yield http
    finally:
        await http.aclose()


async def test_a_request_goes_out_exactly_as_built(
    seen: tuple[Seen, TestServer], client: HttpClient
) -> None:
    recorder, server = seen
    # the percent-encoding a signature covered (%20, %2A, ~, %2C) is not re-quoted
    query = "A=x%20y&B=%2A~&C=1%2C200.00&D=%E7%A4%BA"
    request = build_request(
        "POST", f"{server.make_url('/p/')}?{query}", headers={"x-a": "1"}, content=b"{}"
    )
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    response = await client.send(request)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert recorder.targets == [f"/p/?{query}"]
    assert recorder.bodies == [b"{}"]


async def test_the_host_header_given_is_the_one_sent(
    seen: tuple[Seen, TestServer], client: HttpClient
) -> None:
    recorder, server = seen
    request = build_request("POST", str(server.make_url("/")))
    request.headers["host"] = "sms.example.com"
    await client.send(request)
    assert recorder.hosts == ["sms.example.com"]


async def test_an_httpx_request_is_sent_too(
    seen: tuple[Seen, TestServer], client: HttpClient
) -> None:
    recorder, server = seen
    request = httpx.Request("POST", str(server.make_url("/x?a=1")), content=b"body")
    assert (await client.send(request)).status_code == 200
    assert (recorder.targets, recorder.bodies) == (["/x?a=1"], [b"body"])


async def test_connections_are_limited_and_kept_alive(seen: tuple[Seen, TestServer]) -> None:
    recorder, server = seen
    recorder.delay = 0.02
    http = HttpClient(timeout=5, max_connections=3)
    url = str(server.make_url("/"))
    try:
        for _ in range(2):
            await asyncio.gather(*(http.send(build_request("GET", url)) for _ in range(12)))
    finally:
        await http.aclose()
    assert recorder.most_in_flight == 3
    assert len(recorder.peers) == 3  # the second wave reused the first wave's connections


async def test_a_slow_answer_times_out(seen: tuple[Seen, TestServer]) -> None:
    recorder, server = seen
    recorder.delay = 1.0
    http = HttpClient(timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            await http.send(build_request("GET", str(server.make_url("/"))))
    finally:
        await http.aclose()


async def test_a_closed_client_sends_nothing(seen: tuple[Seen, TestServer]) -> None:
    _, server = seen
    http = HttpClient()
    await http.send(build_request("GET", str(server.make_url("/"))))
    await http.aclose()
    assert http.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await http.send(build_request("GET", str(server.make_url("/"))))


async def test_query_strings_stay_out_of_the_log(
    seen: tuple[Seen, TestServer], client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = seen
    caplog.set_level(logging.DEBUG, logger="icc.channels.http")
    await client.send(build_request("POST", f"{server.make_url('/s')}?PhoneNumbers=13800138000"))
    # (the test server's own access log is captured too when an earlier test enabled it)
    [record] = [r for r in caplog.records if r.name == "icc.channels.http"]
    assert record.getMessage() == (f'HTTP Request: POST {server.make_url("/s")}?<redacted> "200"')


def test_host_and_path_as_on_the_wire() -> None:
    assert host_header("https://dysmsapi.aliyuncs.com/?a=1") == "dysmsapi.aliyuncs.com"
    assert host_header("https://sms.bank.local:443/send") == "sms.bank.local"
    assert host_header("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert host_header("http://[::1]:8080/x") == "[::1]:8080"
    assert raw_path("http://h/a%20b/?q=1") == "/a%20b/"


async def test_environment_proxies_are_used(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY as httpx honoured it: the request goes to the proxy in absolute form."""
    proxy = Seen()
    server = await serve(proxy)
    try:
        monkeypatch.setenv("HTTP_PROXY", str(server.make_url("")))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        http = HttpClient()  # reads the environment when made
        try:
            request = build_request("GET", "http://sms.bank.invalid/send?a=1")
            assert (await http.send(request)).status_code == 200
        finally:
            await http.aclose()
    finally:
        await server.close()
    assert proxy.hosts == ["sms.bank.invalid"]


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[TestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = await serve(Seen(), context)
    try:
        yield server
    finally:
        await server.close()


async def test_tls_certificates_are_verified(tls_server: TestServer) -> None:
    http = HttpClient()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await http.send(build_request("GET", str(tls_server.make_url("/"))))
    finally:
        await http.aclose()


async def test_ssl_cert_file_names_the_trusted_authorities(
    tls_server: TestServer, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    http = HttpClient()
    try:
        response = await http.send(build_request("GET", str(tls_server.make_url("/"))))
    finally:
        await http.aclose()
    assert response.status_code == 200
