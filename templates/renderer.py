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


def render_content(
    *, subject: str | None, body: str, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """Render one channel's template into the content the channel plugin sends."""
    content: dict[str, Any] = {"body": render(body, variables)}
    if subject is not None:
        content["subject"] = render(subject, variables)
    return content
