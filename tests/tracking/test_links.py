"""The pure link rewriting (app/tracking/links.py): which URLs, where they stop, what stays."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.tracking.links import (
    ALPHABET,
    LINK,
    OPEN,
    Link,
    as_tracked,
    is_token,
    new_token,
    retoken,
    track_content,
)

BASE = "https://t.bank.cn"


def _tokens() -> Any:
    counter = itertools.count(1)
    return lambda: f"tok{next(counter):05d}"


def _track(content: dict[str, Any]) -> tuple[dict[str, Any], list[Link]]:
    return track_content(content, base_url=BASE + "/", token=_tokens())


def _sms(body: str) -> tuple[str, list[str | None]]:
    tracked, found = _track({"sms": {"body": body}})
    return tracked["sms"]["body"], [link.url for link in found]


@pytest.mark.parametrize(
    ("body", "urls"),
    [
        (
            "详情见https://bank.cn/wealth?id=3&src=sms，回复TD退订",
            ["https://bank.cn/wealth?id=3&src=sms"],
        ),
        ("点击https://bank.cn/a。", ["https://bank.cn/a"]),
        ("（详见https://bank.cn/a）", ["https://bank.cn/a"]),
        ("「https://bank.cn/a」", ["https://bank.cn/a"]),
        ("see https://bank.cn/a.", ["https://bank.cn/a"]),
        ("(see https://bank.cn/a)", ["https://bank.cn/a"]),
        (
            "https://en.wikipedia.org/wiki/Bank_(finance) now",
            ["https://en.wikipedia.org/wiki/Bank_(finance)"],
        ),
        ("<https://bank.cn/a>", ["https://bank.cn/a"]),
        ('"http://bank.cn/a?x=1"', ["http://bank.cn/a?x=1"]),
        ("HTTPS://BANK.CN/A!", ["HTTPS://BANK.CN/A"]),
        ("a https://bank.cn/%E7%90%86%E8%B4%A2#top b", ["https://bank.cn/%E7%90%86%E8%B4%A2#top"]),
        ("https://bank.cn:8443/a;b?c=[1]", ["https://bank.cn:8443/a;b?c=[1]"]),
    ],
)
def test_text_urls_stop_where_the_sentence_goes_on(body: str, urls: list[str]) -> None:
    rewritten, found = _sms(body)
    assert found == urls
    assert rewritten == body.replace(urls[0], f"{BASE}/t/tok00001")


@pytest.mark.parametrize(
    "body",
    [
        "您尾号1234的账户支出1200.00元",
        "访问 www.bank.cn 或拨打95588",
        "ftp://bank.cn/a mailto:a@b.cn",
        "http:// 和 https://",
        "",
    ],
)
def test_text_without_links_is_untouched(body: str) -> None:
    assert _sms(body) == (body, [])


def test_one_token_per_distinct_url_of_a_message() -> None:
    body = "A https://bank.cn/a B https://bank.cn/b C https://bank.cn/a"
    rewritten, found = _sms(body)
    assert found == ["https://bank.cn/a", "https://bank.cn/b"]
    assert rewritten == f"A {BASE}/t/tok00001 B {BASE}/t/tok00002 C {BASE}/t/tok00001"


def test_already_tracked_links_are_not_tracked_again() -> None:
    body = f"见{BASE}/t/abcdEFGH，谢谢"
    assert _sms(body) == (body, [])


HTML = """<html><head><link rel="stylesheet" href="https://cdn.bank.cn/m.css"></head>
<BODY><p>理财推荐：<a class="btn" href="https://bank.cn/w?a=1&amp;b=2" target="_blank">立即查看</a>
<a href='http://bank.cn/x'>x</a> <a href="mailto:vip@bank.cn">邮件</a> <a href="tel:95588">电话</a>
<a href="#top">top</a> <a href="/relative">r</a> <img src="https://cdn.bank.cn/logo.png">
https://bank.cn/plain-text-in-html</p></BODY></html>"""


def test_email_hrefs_pixel_and_text_part() -> None:
    content = {
        "email": {
            "subject": "理财 https://bank.cn/subject",
            "body": "查看 https://bank.cn/w?a=1&b=2 。",
            "html": HTML,
        }
    }
    tracked, found = _track(content)
    email = tracked["email"]
    assert email["subject"] == content["email"]["subject"]  # subjects carry no links
    assert found == [
        Link("tok00001", LINK, "https://bank.cn/w?a=1&b=2"),
        Link("tok00002", LINK, "http://bank.cn/x"),
        Link("tok00003", OPEN, None),
    ]
    assert email["body"] == f"查看 {BASE}/t/tok00001 。"
    expected = (
        HTML.replace("https://bank.cn/w?a=1&amp;b=2", f"{BASE}/t/tok00001")
        .replace("http://bank.cn/x", f"{BASE}/t/tok00002")
        .replace(
            "</BODY>",
            f'<img src="{BASE}/o/tok00003" width="1" height="1" alt="" style="display:none">'
            "</BODY>",
        )
    )
    assert email["html"] == expected


def test_only_the_href_attribute_of_links_is_rewritten() -> None:
    markup = (
        '<a data-href="https://bank.cn/d" href="https://bank.cn/h">x</a>'
        '<A\n  HREF = "https://bank.cn/u">y</A><abbr href="https://bank.cn/no">z</abbr>'
        "<a href=https://bank.cn/unquoted>w</a><area shape=rect href='https://bank.cn/area'>"
    )
    tracked, found = _track({"email": {"body": "", "html": markup}})
    assert [link.url for link in found if link.kind == LINK] == [
        "https://bank.cn/h",
        "https://bank.cn/u",
        "https://bank.cn/area",
    ]
    html = tracked["email"]["html"]
    assert 'data-href="https://bank.cn/d" href="https://t.bank.cn/t/tok00001"' in html
    assert '<A\n  HREF = "https://t.bank.cn/t/tok00002">' in html
    assert '<abbr href="https://bank.cn/no">' in html
    assert "<a href=https://bank.cn/unquoted>" in html  # unquoted: left alone


def test_pixel_goes_at_the_end_of_html_without_a_body_tag() -> None:
    tracked, found = _track({"email": {"body": "x", "html": "<p>你好</p>"}})
    assert tracked["email"]["html"] == (
        f'<p>你好</p><img src="{BASE}/o/tok00001" width="1" height="1" alt="" style="display:none">'
    )
    assert found == [Link("tok00001", OPEN, None)]


def test_email_without_html_gets_no_pixel() -> None:
    tracked, found = _track({"email": {"subject": "s", "body": "no links"}})
    assert tracked == {"email": {"subject": "s", "body": "no links"}}
    assert found == []


def test_wechat_jump_and_text() -> None:
    content = {
        "wechat": {
            "body": "推荐 https://bank.cn/a",
            "template_id": "TPL1",
            "data": {"keyword1": "尾号1234"},
            "url": "https://bank.cn/jump?from=wx",
            "miniprogram": {"appid": "wx1", "pagepath": "pages/index"},
        }
    }
    tracked, found = _track(content)
    assert tracked["wechat"]["url"] == f"{BASE}/t/tok00002"
    assert tracked["wechat"]["body"] == f"推荐 {BASE}/t/tok00001"
    assert tracked["wechat"]["miniprogram"] == content["wechat"]["miniprogram"]
    assert [link.url for link in found] == ["https://bank.cn/a", "https://bank.cn/jump?from=wx"]


def test_the_input_is_not_changed() -> None:
    content = {"sms": {"body": "https://bank.cn/a"}, "email": {"body": "b", "html": "<a>"}}
    before = repr(content)
    _track(content)
    assert repr(content) == before


def test_as_tracked_reads_as_the_tracked_text() -> None:
    """What an SMS budget measures equals, in length, what tracking makes of the text."""
    text = "理财 https://bank.cn/a，详见 https://bank.cn/a 或 (https://bank.cn/b)."
    tracked, _ = _track({"sms": {"body": text}})
    measured = as_tracked(text, base_url=BASE + "/")
    assert len(measured) == len(tracked["sms"]["body"])
    assert len(as_tracked("https://bank.cn/a", base_url=BASE + "/")) == len(BASE) + 11


def test_retoken_moves_every_use_of_a_token() -> None:
    tracked, _ = _track({"sms": {"body": "https://bank.cn/a"}, "email": {"body": "x", "html": ""}})
    moved = retoken(tracked, base_url=BASE, old="tok00001", new="NEWTOKEN")
    assert moved["sms"]["body"] == f"{BASE}/t/NEWTOKEN"
    assert f"{BASE}/o/tok00002" in moved["email"]["html"]


def test_tokens_are_base62_of_the_right_length_and_uniform() -> None:
    tokens = [new_token() for _ in range(5000)]
    assert all(is_token(t) and len(t) == 8 for t in tokens)
    assert len(set(tokens)) == len(tokens)
    counts = Counter("".join(tokens))
    assert set(counts) <= set(ALPHABET)
    expected = 5000 * 8 / 62
    assert all(abs(counts[c] - expected) < 0.35 * expected for c in ALPHABET)


@pytest.mark.parametrize(
    "text", ["", "abc", "abcdefg!", "abcdefghi", "../../etc", "测试测试测试测试"]
)
def test_malformed_tokens(text: str) -> None:
    assert not is_token(text)
    assert re.fullmatch(r"[0-9A-Za-z]{8}", "aZ09aZ09")


_PIECES = st.sampled_from(
    [
        "您尾号1234的账户",
        "，",
        "。",
        "）",
        "「",
        " ",
        "\n",
        "(",
        ")",
        ".",
        "!",
        "https://bank.cn/a?x=1&y=2",
        "http://bank.cn/理财",
        "HTTPS://BANK.CN/b#frag",
        "https://bank.cn/wiki/A_(B)",
        "www.bank.cn",
        "mailto:a@b.cn",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_text_maps_back_to_the_original(text: str) -> None:
    """Putting the original URLs back in place of the tracked ones gives the text again, and
    every tracked URL stands for a URL that was in the text."""
    tracked, found = track_content({"sms": {"body": text}}, base_url=BASE, token=_tokens())
    body = tracked["sms"]["body"]
    for link in found:
        assert link.url is not None
        assert link.url in text
        body = body.replace(f"{BASE}/t/{link.token}", link.url)
    assert body == text
    assert len(found) == len({link.url for link in found})
