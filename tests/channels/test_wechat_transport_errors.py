"""WeChat puts the AppSecret (``/cgi-bin/token``, token_mode client_credential) and the
access_token (template sends) in the query string. Every transport failure, including the
aiohttp errors the httpx-aiohttp transport passes through unmapped (an answer that is not
HTTP, an oversized header), becomes a transient channel error whose text has them blanked;
and the log formatters blank them wherever a traceback still carries them."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from app.logging import MaskingJsonFormatter, MaskingTextFormatter
from channels.base import ProviderContext
from channels.errors import TransientChannelError
from channels.wechat import WeChatTemplateProvider
from tests.delivery_attempts import attempt, claimed, registry

SECRET = "0a1b2c3d4e5f-APP-SECRET-DO-NOT-LOG"
TOKEN = "83_tOkEn-DO-NOT-LOG"
CONTENT = {"template_id": "TPL_1", "data": {"first": "您尾号1234的账户支出"}}


@pytest.fixture
async def not_http() -> AsyncIterator[int]:
    """An endpoint that does not answer HTTP (a wrong port, a broken proxy)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"220 relay.bank.local ESMTP ready\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


def provider(port: int) -> WeChatTemplateProvider:
    return WeChatTemplateProvider(
        account="wechat-main",
        channel="wechat",
        settings={
            "app_id": "wx5im0000000000001",
            "app_secret": SECRET,
            "callback_token": "cb-token",
            "endpoint": f"http://127.0.0.1:{port}",
            "token_mode": "client_credential",
        },
        context=ProviderContext(),
    )


async def test_an_answer_that_is_not_http_is_a_transient_error_without_the_secret(
    not_http: int,
) -> None:
    wechat = provider(not_http)
    try:
        with pytest.raises(TransientChannelError) as caught:
            await wechat.send(
                to="oAbC" + "x" * 24,
                content=CONTENT,
                idempotency_key="m1:wechat",
                message_id="m1",
            )
    finally:
        await wechat.close()
    assert caught.value.code == "network"
    assert SECRET not in str(caught.value)
    assert "secret=***" in str(caught.value)


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingJsonFormatter())  # what `icc worker` logs through
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_the_worker_retries_it_and_logs_no_secret(
    not_http: int, worker_log: io.StringIO
) -> None:
    wechat = provider(not_http)
    try:
        attempts = await attempt(
            registry((wechat, {})),
            claimed("m1", "wechat", {"wechat_openid": "oAbC" + "x" * 24}, CONTENT),
        )
    finally:
        await wechat.close()
    error = attempts[-1].error
    assert isinstance(error, TransientChannelError)
    assert error.code == "network"
    assert SECRET not in worker_log.getvalue()


def _log_a_url_error(logger: logging.Logger) -> None:
    url = f"https://api.weixin.qq.com/cgi-bin/token?appid=wx1&secret={SECRET}"
    try:
        raise RuntimeError(f"bad answer from {url}&access_token={TOKEN}")
    except RuntimeError:
        logger.exception("request to %s failed", url)


@pytest.mark.parametrize("formatter", [MaskingJsonFormatter(), MaskingTextFormatter()])
def test_the_log_formatters_blank_secrets_in_messages_and_tracebacks(
    formatter: logging.Formatter,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.secret_redaction")
    logger.addHandler(handler)
    try:
        _log_a_url_error(logger)
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "RuntimeError" in logged
    assert SECRET not in logged
    assert TOKEN not in logged
    assert "secret=***" in logged
    assert "access_token=***" in logged
