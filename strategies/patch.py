"""Putting a rendered marketing patch into a message's rendered content, per channel. Pure.

The transactional content always goes out unchanged; the patch is added only where it fits:

- SMS: the patch, ending with the opt-out hint (拒收请回复R), is appended to the text only
  while the whole SMS (signature included) stays within the segment budget (default 2);
  otherwise it is dropped and the result says why. Template-only providers (Aliyun, Tencent)
  get it in their template's patch parameter slot, when the template has one.
- Email: a patch block goes where the HTML has ``<!-- icc:patch -->``, else before
  ``</body>``, else at the end; the text part gets the patch as a last paragraph.
- WeChat: the patch goes to the remark field (appended to a remark already there), and its
  link becomes the jump URL when the notice has none.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from templates.sms_length import sms_length

PLACEHOLDER = "<!-- icc:patch -->"


@dataclass(frozen=True)
class Patch:
    """The patch rendered for one customer: a line of text, optionally an HTML block (already
    escaped by the email renderer) and a link."""

    text: str
    html: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class PatchSettings:
    sms_max_segments: int = 2
    opt_out_hint: str = "拒收请回复R"
    sms_signature: str | None = None
    provider_slot: str = "patch"  # the parameter of provider SMS templates that takes it
    wechat_field: str = "remark"
    # links of patched content become tracked links after composing (app/tracking): the SMS
    # budget measures the text as this makes it read then (None: links stay as they are)
    as_tracked: Callable[[str], str] | None = None


@dataclass(frozen=True)
class Composed:
    content: dict[str, Any]
    applied: bool
    reason: str | None = None  # why the patch was dropped, or a partial application
    details: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """For the message's decision record."""
        return {"applied": self.applied, "reason": self.reason} | self.details


def compose(
    channel: str, content: Mapping[str, Any], patch: Patch, settings: PatchSettings
) -> Composed:
    """``content`` with ``patch`` added for ``channel`` (``content`` itself is not changed).
    A patch that renders to nothing (a condition that does not hold for this message) is no
    patch: the content stays as it is."""
    if _empty(channel, content, patch):
        return Composed(dict(content), False, "patch rendered empty")
    if channel == "sms":
        return _sms(content, patch, settings)
    if channel == "email":
        return _email(content, patch)
    if channel == "wechat":
        return _wechat(content, patch, settings)
    return Composed(dict(content), False, f"no patch for channel {channel!r}")


def _empty(channel: str, content: Mapping[str, Any], patch: Patch) -> bool:
    if patch.text.strip():
        return False
    # an HTML block may be all there is to an email's patch, when the email has HTML
    return channel != "email" or not ((patch.html or "").strip() and content.get("html"))


def sms_patch_text(patch: Patch, hint: str) -> str:
    text = patch.text.strip()
    if hint and not text.endswith(hint):
        text = f"{text}{'' if text.endswith(('。', '！', '!', '.')) else '，'}{hint}"
    return text


def _sms(content: Mapping[str, Any], patch: Patch, settings: PatchSettings) -> Composed:
    line = sms_patch_text(patch, settings.opt_out_hint)
    body = str(content.get("body", ""))
    # no space after full-width punctuation (。！？) or an existing break
    patched = body + ("" if body.endswith((" ", "\n", "。", "！", "？", "；")) else " ") + line
    measured = settings.as_tracked(patched) if settings.as_tracked else patched
    length = sms_length(measured, signature=settings.sms_signature)
    details = {"segments": length.segments, "budget": settings.sms_max_segments}
    if length.segments > settings.sms_max_segments:
        budget = settings.sms_max_segments
        reason = f"sms_length: {length.segments} segments with the patch, budget {budget}"
        return Composed(dict(content), False, reason, details)
    out: dict[str, Any] = dict(content) | {"body": patched}
    missing: list[str] = []
    if content.get("provider_templates"):
        out["provider_templates"], missing = _fill_slots(
            content["provider_templates"], settings.provider_slot, line
        )
    partial = f"no {settings.provider_slot!r} parameter in: {', '.join(missing)}"
    return Composed(out, True, partial if missing else None, details)


def _fill_slots(
    mappings: Mapping[str, Any], slot: str, line: str
) -> tuple[dict[str, Any], list[str]]:
    filled: dict[str, Any] = {}
    missing: list[str] = []
    for key, mapping in mappings.items():
        params = dict(mapping.get("params", {}))
        if slot in params:
            params[slot] = line
        else:
            missing.append(key)
        filled[key] = dict(mapping) | {"params": params}
    return filled, missing


def _email(content: Mapping[str, Any], patch: Patch) -> Composed:
    out = dict(content)
    text = "\n".join(t for t in (patch.text.strip(), patch.url) if t)
    if text:  # none when the patch is an HTML block alone
        out["body"] = f"{str(content.get('body', '')).rstrip()}\n\n{text}\n"
    if content.get("html"):
        out["html"] = _insert_html(str(content["html"]), _html_block(patch))
    return Composed(out, True)


def _html_block(patch: Patch) -> str:
    if patch.html:
        inner = patch.html
    else:
        inner = html_lib.escape(patch.text.strip())
        if patch.url:
            inner = f'<a href="{html_lib.escape(patch.url, quote=True)}">{inner}</a>'
    return f'<div class="icc-patch">{inner}</div>'


def _insert_html(document: str, block: str) -> str:
    if PLACEHOLDER in document:
        return document.replace(PLACEHOLDER, block, 1)
    at = document.lower().rfind("</body>")
    if at >= 0:
        return document[:at] + block + document[at:]
    return document + block


def _wechat(content: Mapping[str, Any], patch: Patch, settings: PatchSettings) -> Composed:
    out = dict(content)
    data = dict(content.get("data") or {})
    name = settings.wechat_field
    existing = str(data.get(name, "")).rstrip()
    data[name] = f"{existing}\n{patch.text.strip()}" if existing else patch.text.strip()
    out["data"] = data
    details: dict[str, Any] = {"field": name}
    if patch.url and not content.get("url") and not content.get("miniprogram"):
        out["url"] = patch.url
        details["url"] = True
    return Composed(out, True, None, details)
