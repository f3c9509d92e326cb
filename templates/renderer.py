"""The sandboxed Jinja2 renderer. Marketer-written templates can neither reach Python
internals (SandboxedEnvironment) nor silently print nothing for a missing variable
(StrictUndefined)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

_TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


class TemplateError(Exception):
    """A template does not compile or cannot be rendered with the given variables."""


@lru_cache(maxsize=4096)
def compile_template(source: str, *, html: bool = False) -> JinjaTemplate:
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template does not compile: {exc.message} (line {exc.lineno})"
        ) from exc


def render(source: str, variables: Mapping[str, Any], *, html: bool = False) -> str:
    try:
        return compile_template(source, html=html).render(variables)
    except UndefinedError as exc:
        raise TemplateError(f"template uses an unknown variable: {exc.message}") from exc
    except SecurityError as exc:
        raise TemplateError(f"template tried an unsafe operation: {exc}") from exc


def template_parts(
    subject: str | None, body: str, options: Mapping[str, Any]
) -> list[tuple[str, str, bool]]:
    """Every Jinja2 source of a channel template: (path, source, is_html)."""
    parts = [("body", body, False)]
    if subject is not None:
        parts.append(("subject", subject, False))
    if options.get("html"):
        parts.append(("html", options["html"], True))
    for key, mapping in options.get("provider_templates", {}).items():
        for name, source in mapping.get("params", {}).items():
            parts.append((f"provider_templates.{key}.params.{name}", source, False))
    wechat = options.get("wechat") or {}
    for name, source in wechat.get("fields", {}).items():
        parts.append((f"wechat.fields.{name}", source, False))
    if wechat.get("url"):
        parts.append(("wechat.url", wechat["url"], False))
    return parts


def render_channel(
    *,
    subject: str | None,
    body: str,
    options: Mapping[str, Any],
    variables: Mapping[str, Any],
    marketing: bool = False,
) -> dict[str, Any]:
    """Render one channel's template into the content its provider plugins send."""
    content: dict[str, Any] = {"body": render(body, variables)}
    if subject is not None:
        content["subject"] = render(subject, variables)
    if options.get("html"):
        content["html"] = render(options["html"], variables, html=True)
    mappings = options.get("provider_templates") or {}
    if mappings:
        content["provider_templates"] = {
            key: {
                "template_code": m["template_code"],
                "params": {n: render(src, variables) for n, src in m.get("params", {}).items()},
            }
            for key, m in mappings.items()
        }
    if options.get("wechat"):
        content.update(_render_wechat(options["wechat"], variables))
    if marketing:
        content["marketing"] = True
    return content


def _render_wechat(wechat: Mapping[str, Any], variables: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "template_id": wechat["template_id"],
        "data": {f: render(src, variables) for f, src in wechat.get("fields", {}).items()},
    }
    if wechat.get("url"):
        out["url"] = render(wechat["url"], variables)
    if wechat.get("miniprogram"):
        out["miniprogram"] = dict(wechat["miniprogram"])
    return out
