"""Junk sent to the provider callbacks gets a 4xx {"error","detail"}, never a 500: a
signature that cannot be WeChat's is a 401."""

from __future__ import annotations

import pytest

from channels.base import ProviderContext
from channels.wechat import WeChatTemplateProvider
from tests.conftest import Platform

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
TOKEN = "callback-token-0123456789"


def _wechat(platform: Platform) -> None:
    provider = WeChatTemplateProvider(
        account="wechat-main",
        channel="wechat",
        settings={
            "app_id": "wx5im0000000000001",
            "app_secret": "secret",
            "callback_token": TOKEN,
            "endpoint": "http://127.0.0.1:9",
            "token_mode": "client_credential",
        },
        context=ProviderContext(),
    )
    platform.runtime.providers.replace("wechat", [provider])


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_non_ascii_wechat_signature_is_a_401(platform: Platform, method: str) -> None:
    _wechat(platform)
    query = {"signature": "签名", "timestamp": "1700000000", "nonce": "n", "echostr": "e"}
    async with platform.served_client() as client:
        response = await client.request(
            method, "/v1/callbacks/wechat-main", params=query, content=b"<xml/>"
        )
    assert response.status_code == 401, (response.status_code, response.text)
    assert set(response.json()) >= {"error", "detail"}
