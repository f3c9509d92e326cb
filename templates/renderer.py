"""The sandboxed Jinja2 renderer. Marketer-written templates can neither reach Python
internals (SandboxedEnvironment) nor silently print nothing for a missing variable
(StrictUndefined)."""

from __future__ import annotations

import re
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


_NAME = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@lru_cache(maxsize=4096)
def _plain_parts(source: str) -> tuple[str, ...] | None:
    """Text and ``{{ name }}`` only (most notices): alternating text and variable names, for
    a substitution that skips Jinja2's per-render context. Anything else: None (Jinja2)."""
    if "{%" in source or "{#" in source or "\r" in source:
        return None
    if source.endswith("\n"):  # Jinja2 drops one trailing newline (keep_trailing_newline)
        source = source[:-1]
    parts = tuple(_NAME.split(source))
    if any("{{" in text or "}}" in text for text in parts[::2]):
        return None
    return parts


def _substitute(parts: tuple[str, ...], variables: Mapping[str, Any]) -> str:
    out = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(part)
        elif part in variables:
            out.append(str(variables[part]))  # as Jinja2 prints a value
        else:
            raise TemplateError(f"template uses an unknown variable: '{part}' is undefined")
    return "".join(out)


def render(source: str, variables: Mapping[str, Any], *, html: bool = False) -> str:
    parts = None if html else _plain_parts(source)
    if parts is not None:
        return _substitute(parts, variables)
    try:
        return compile_template(source, html=html).render(variables)
    except UndefinedError as exc:
        raise TemplateError(f"template uses an unknown variable: {exc.message}") from exc
    except SecurityError as exc:
        raise TemplateError(f"template tried an unsafe operation: {exc}") from exc
    except TemplateError:
        raise
    except Exception as exc:  # e.g. a filter given a string where it wants a number
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from exc


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
