"""The sandboxed Jinja2 renderer. Marketer-written templates can neither reach Python
internals nor silently print nothing for a missing variable (StrictUndefined).

Beyond Jinja2's SandboxedEnvironment, the environment here has no globals (no ``range``,
``cycler``, ``lipsum``...), only an allow-list of filters (each with its output bounded), no
method or function calls, no callable attributes, no ``**``, no ``%`` string formatting,
string repetition and numbers (products, filters' results) bounded; a render stops once its
output passes ``MAX_OUTPUT``. Publishing refuses more still, before anything runs
(templates/checks.py).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from templates.filters import BANKING_FILTERS, DEFAULT_TIMEZONE, TIMEZONE_KEY, FilterError

MAX_OUTPUT = 1_000_000  # characters of one rendered part, and of one filter's result
MAX_REPEAT = 10_000  # characters of a string repeated with *
# bits of an integer a template multiplies or a filter makes (77 digits: any amount or
# number a notice shows): products of big integers cost quadratic time, and a chain of
# them an unbounded one, with nothing printed to stop it
MAX_INT_BITS = 256

# Jinja2's filters that only shrink or transform linearly what they are given; the others
# (format, center, indent, join, replace, wordwrap, map, attr...) can build huge strings or
# reach into objects.
SAFE_JINJA_FILTERS = (
    *("abs", "capitalize", "d", "default", "e", "escape", "first", "float", "int", "last"),
    *("length", "lower", "round", "string", "striptags", "title", "trim", "truncate"),
    *("upper", "urlencode", "wordcount"),
)


class TemplateError(Exception):
    """A template does not compile or cannot be rendered with the given variables."""


# Jinja2's parser and code generator recurse per level of nesting, and Python's compiler
# bounds the nesting of the code generated: a few hundred levels (well within a body's
# length) raise these, which are the template's fault, not the server's
TOO_DEEP_ERRORS = (RecursionError, MemoryError, SyntaxError)
TOO_DEEP = "nests too deeply (parentheses, filters, conditions or operators); flatten it"


def _bounded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps Jinja2's pass_context marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise SecurityError(f"filter {name!r} made more than {MAX_OUTPUT} characters")
        if _out_of_bounds(result):
            raise SecurityError(f"filter {name!r} made a number out of bounds")
        return result

    return bounded


class BankEnvironment(SandboxedEnvironment):
    """Jinja2's sandbox, narrowed to what message templates need."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, html: bool) -> None:
        # not optimized: Jinja2's constant folding revisits each expression's whole subtree
        # at every level of it (compiling takes time quadratic in nesting), for little gain
        # in message templates
        super().__init__(undefined=StrictUndefined, autoescape=html, optimized=False)
        self.globals.clear()
        filters = {n: JINJA_FILTERS[n] for n in SAFE_JINJA_FILTERS} | BANKING_FILTERS
        self.filters = {n: _bounded(n, f) for n, f in filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the ** operator is not allowed")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("% string formatting is not allowed; use filters")
        if operator != "*":
            return super().call_binop(context, operator, left, right)
        _check_repetition(left, right)
        _check_product(left, right)
        result = super().call_binop(context, operator, left, right)
        if _out_of_bounds(result):  # a float product overflowing to infinity
            raise SecurityError("a product out of bounds")
        return result

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # no methods: str.ljust(10**9), str.format(...) and the like stay out of reach
        return not callable(value) and super().is_safe_attribute(obj, attr, value)

    def call(
        self, __context: Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:  # refused at publish already; this holds for templates stored before
        raise SecurityError("calls are not allowed in templates; use filters")


def _check_repetition(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, list | tuple) and isinstance(times, int):
            raise SecurityError("repeating a sequence with * is not allowed")
        if isinstance(seq, str) and isinstance(times, int) and len(seq) * times > MAX_REPEAT:
            raise SecurityError(f"a string repeated to more than {MAX_REPEAT} characters")


def _out_of_bounds(value: Any) -> bool:
    if isinstance(value, int):
        return value.bit_length() > MAX_INT_BITS
    return isinstance(value, float) and math.isinf(value)


def _check_product(left: Any, right: Any) -> None:
    """Refuse a product of integers past ``MAX_INT_BITS``, before computing it."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:  # the product has more
        raise SecurityError(f"a product of integers of more than {MAX_INT_BITS} bits")


TEXT_ENV = BankEnvironment(html=False)
HTML_ENV = BankEnvironment(html=True)


def environment(*, html: bool) -> BankEnvironment:
    return HTML_ENV if html else TEXT_ENV


@lru_cache(maxsize=4096)
def compile_template(source: str, *, html: bool = False) -> JinjaTemplate:
    try:
        return environment(html=html).from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template does not compile: {exc.message} (line {exc.lineno})"
        ) from exc
    except TOO_DEEP_ERRORS as exc:
        raise TemplateError(f"template {TOO_DEEP}") from exc


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


def _collect(chunks: Iterator[str]) -> str:
    out, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateError(f"template made more than {MAX_OUTPUT} characters")
        out.append(chunk)
    return "".join(out)


def render(
    source: str, variables: Mapping[str, Any], *, html: bool = False, timezone: str | None = None
) -> str:
    """Render ``source``; ``timezone`` (IANA, default Asia/Shanghai) is what the date filters
    show times in. Raises TemplateError."""
    parts = None if html else _plain_parts(source)
    if parts is not None:
        return _substitute(parts, variables)
    try:
        template = compile_template(source, html=html)
        return _collect(
            template.generate(variables, **{TIMEZONE_KEY: timezone or DEFAULT_TIMEZONE})
        )
    except UndefinedError as exc:
        raise TemplateError(f"template uses an unknown variable: {exc.message}") from exc
    except SecurityError as exc:
        raise TemplateError(f"template tried an unsafe operation: {exc}") from exc
    except FilterError as exc:
        raise TemplateError(f"template filter failed: {exc}") from exc
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
    timezone: str | None = None,
) -> dict[str, Any]:
    """Render one channel's template into the content its provider plugins send."""

    def text(source: str, *, html: bool = False) -> str:
        return render(source, variables, html=html, timezone=timezone)

    content: dict[str, Any] = {"body": text(body)}
    if subject is not None:
        content["subject"] = text(subject)
    if options.get("html"):
        content["html"] = text(options["html"], html=True)
    mappings = options.get("provider_templates") or {}
    if mappings:
        content["provider_templates"] = {
            key: {
                "template_code": m["template_code"],
                "params": {n: text(src) for n, src in m.get("params", {}).items()},
            }
            for key, m in mappings.items()
        }
    if options.get("wechat"):
        content.update(_render_wechat(options["wechat"], text))
    if marketing:
        content["marketing"] = True
    return content


def _render_wechat(wechat: Mapping[str, Any], text: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "template_id": wechat["template_id"],
        "data": {f: text(src) for f, src in wechat.get("fields", {}).items()},
    }
    if wechat.get("url"):
        out["url"] = text(wechat["url"])
    if wechat.get("miniprogram"):
        out["miniprogram"] = dict(wechat["miniprogram"])
    return out
