"""Patch composition per channel: SMS length budget and opt-out hint, provider template
slots, email HTML/text blocks, WeChat remark and jump URL."""

from __future__ import annotations

from functools import partial
from typing import Any

from app.tracking.links import as_tracked, track_content
from strategies.patch import PLACEHOLDER, Patch, PatchSettings, compose, sms_patch_text
from templates.sms_length import sms_length

NOTICE = "您尾号1234的账户于11月23日支出1,200.00元，余额35,200.50元。"
WEALTH = Patch(text="稳健理财年化3.2%，点击了解", url="https://bank.example/w?c=1")
SETTINGS = PatchSettings(sms_signature="示例银行")


def test_sms_appends_the_patch_with_the_opt_out_hint_within_two_segments() -> None:
    composed = compose("sms", {"body": NOTICE}, WEALTH, SETTINGS)
    assert composed.applied
    body = composed.content["body"]
    assert body.startswith(NOTICE)
    assert body.endswith("稳健理财年化3.2%，点击了解，拒收请回复R")
    segments = sms_length(body, signature="示例银行").segments
    assert segments <= 2
    assert composed.record() == {"applied": True, "reason": None, "segments": segments, "budget": 2}
    assert "。稳健理财" in body  # no space after full-width punctuation


def test_sms_drops_a_patch_that_would_exceed_the_budget_and_says_why() -> None:
    long_patch = Patch(text="理财" * 40)
    composed = compose("sms", {"body": NOTICE}, long_patch, SETTINGS)
    assert not composed.applied
    assert composed.content == {"body": NOTICE}  # the notice itself is untouched
    assert str(composed.reason).startswith("sms_length: ")
    one_segment = PatchSettings(sms_signature="示例银行", sms_max_segments=1)
    longer = Patch(text="稳健理财年化3.2%，尊享客户经理一对一服务，点击了解详情")
    assert compose("sms", {"body": NOTICE}, longer, SETTINGS).applied
    assert not compose("sms", {"body": NOTICE}, longer, one_segment).applied


def test_the_hint_is_not_repeated_and_punctuation_is_respected() -> None:
    assert sms_patch_text(Patch("贷款额度已提升，拒收请回复R"), "拒收请回复R") == (
        "贷款额度已提升，拒收请回复R"
    )
    assert sms_patch_text(Patch("贷款额度已提升。"), "拒收请回复R") == "贷款额度已提升。拒收请回复R"


def test_template_only_providers_get_the_patch_in_their_slot() -> None:
    content: dict[str, Any] = {
        "body": NOTICE,
        "provider_templates": {
            "aliyun_sms": {"template_code": "SMS_1", "params": {"tail": "1234", "patch": ""}},
            "tencent_sms": {"template_code": "2", "params": {"tail": "1234"}},
        },
    }
    composed = compose("sms", content, WEALTH, SETTINGS)
    slots = composed.content["provider_templates"]
    assert slots["aliyun_sms"]["params"]["patch"].endswith("拒收请回复R")
    assert slots["tencent_sms"]["params"] == {"tail": "1234"}
    assert composed.reason == "no 'patch' parameter in: tencent_sms"
    assert content["provider_templates"]["aliyun_sms"]["params"]["patch"] == ""  # not mutated


def test_email_gets_a_block_at_the_placeholder_or_before_the_body_ends() -> None:
    html = f"<html><body><p>账户变动</p>{PLACEHOLDER}<p>footer</p></body></html>"
    composed = compose(
        "email", {"subject": "s", "body": "账户变动", "html": html}, WEALTH, SETTINGS
    )
    assert composed.applied
    assert (
        '<p>账户变动</p><div class="icc-patch"><a href="https://bank.example/w?c=1">'
        in (composed.content["html"])
    )
    assert (
        composed.content["body"]
        == "账户变动\n\n稳健理财年化3.2%，点击了解\nhttps://bank.example/w?c=1\n"
    )
    plain = compose(
        "email", {"body": "x", "html": "<p>x</p></BODY>"}, Patch("<b>优惠</b>"), SETTINGS
    )
    assert (
        plain.content["html"]
        == '<p>x</p><div class="icc-patch">&lt;b&gt;优惠&lt;/b&gt;</div></BODY>'
    )


def test_wechat_puts_the_patch_in_the_remark_and_the_link_as_jump_url() -> None:
    content = {"template_id": "T", "data": {"keyword1": "尾号1234", "remark": "感谢使用"}}
    composed = compose("wechat", content, WEALTH, SETTINGS)
    assert composed.content["data"]["remark"] == "感谢使用\n稳健理财年化3.2%，点击了解"
    assert composed.content["url"] == "https://bank.example/w?c=1"
    with_url = compose("wechat", content | {"url": "https://bank.example/tx"}, WEALTH, SETTINGS)
    assert with_url.content["url"] == "https://bank.example/tx"  # the notice's own link stays


def test_the_sms_budget_counts_links_as_long_as_their_tracked_form() -> None:
    """A short link in the patch becomes a longer tracked link after composing: the budget
    must count the tracked length, or the final SMS could exceed it."""
    base = "https://m.example-bank.com.cn/marketing/go"
    short = Patch(text="理财点击 http://a.cn/x 了解")
    # grow the notice until the untracked patch just fits in two segments
    notice, fits = NOTICE, NOTICE
    while compose("sms", {"body": notice}, short, SETTINGS).applied:
        fits, notice = notice, notice + "余"
    untracked = compose("sms", {"body": fits}, short, SETTINGS)
    assert untracked.applied
    tracking = PatchSettings(
        sms_signature="示例银行", as_tracked=partial(as_tracked, base_url=base)
    )
    counted = compose("sms", {"body": fits}, short, tracking)
    assert not counted.applied  # with the tracked link it would need a third segment
    assert str(counted.reason).startswith("sms_length: 3 segments")
    # and what does fit stays within the budget once its link is really tracked
    for body in (NOTICE, NOTICE + "余" * 5):
        composed = compose("sms", {"body": body}, short, tracking)
        if composed.applied:
            content, links = track_content({"sms": composed.content}, base_url=base)
            assert [link.url for link in links] == ["http://a.cn/x"]
            final = content["sms"]["body"]
            assert "http://a.cn/x" not in final
            assert sms_length(final, signature="示例银行").segments <= 2
