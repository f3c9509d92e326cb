"""What publishing checks before a template version goes live (pure): every part compiles,
uses only the declared variables and known filters, and stays inside the small language
message templates need. Known template-injection payloads fail here, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from templates.renderer import (
    MAX_REPEAT,
    TOO_DEEP,
    TOO_DEEP_ERRORS,
    TemplateError,
    compile_template,
    environment,
    template_parts,
)

# Expressions, conditions and filters; no loops, assignments, calls, macros, includes or
# autoescape switches: no template can grow its output beyond its own size times its inputs.
_ALLOWED = (
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.Filter,
    nodes.Test,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Concat,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
    nodes.FilterBlock,
)
_REFUSED = {
    nodes.For: "{% for %} loops are not allowed",
    nodes.Call: "function and method calls are not allowed; use filters",
    nodes.Pow: "the ** operator is not allowed",
    nodes.Assign: "{% set %} is not allowed",
    nodes.AssignBlock: "{% set %} is not allowed",
    nodes.With: "{% with %} is not allowed",
    nodes.Macro: "macros are not allowed",
    nodes.CallBlock: "{% call %} is not allowed",
    nodes.Include: "{% include %} is not allowed",
    nodes.Import: "{% import %} is not allowed",
    nodes.FromImport: "{% from ... import %} is not allowed",
    nodes.Extends: "{% extends %} is not allowed",
    nodes.Block: "{% block %} is not allowed",
    nodes.Scope: "{% autoescape %} is not allowed",
    nodes.ScopedEvalContextModifier: "{% autoescape %} is not allowed",
    nodes.EvalContextModifier: "{% autoescape %} is not allowed",
}
_RESERVED_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs"})
# Levels of nesting (conditions, operators, filters inside one another): message templates
# need a handful; Jinja2's compiler takes time quadratic in it (it folds constants level by
# level), and Python's parser and compiler give up at a few hundred
MAX_DEPTH = 50


@dataclass(frozen=True)
class Problem:
    """Why one part of a template cannot be published: ``path`` as in template_parts
    (``body``, ``subject``, ``html``, ``provider_templates.aliyun_sms.params.tail``...)."""

    path: str
    message: str


def _const_str(node: nodes.Node) -> str | None:
    value = node.value if isinstance(node, nodes.Const) else None
    return value if isinstance(value, str) else None


def _filter_or_test(node: nodes.Filter | nodes.Test, html: bool) -> str | None:
    env = environment(html=html)
    kind, known = ("filter", env.filters) if isinstance(node, nodes.Filter) else ("test", env.tests)
    if node.name in known:
        return None
    return f"unknown {kind} {node.name!r}; available: {', '.join(sorted(known))}"


def _repetition(node: nodes.Mul) -> str | None:
    """A constant text repeated past the renderer's bound (``'a' * 1000000000``)."""
    for text, times in ((node.left, node.right), (node.right, node.left)):
        value = _const_str(text)
        count = times.value if isinstance(times, nodes.Const) else None
        if value is not None and isinstance(count, int) and len(value) * count > MAX_REPEAT:
            return f"text repeated to more than {MAX_REPEAT} characters"
    return None


def _formatting(node: nodes.Mod) -> str | None:
    if _const_str(node.left) is not None:
        return "% string formatting is not allowed; use filters"
    return None


def _name(node: nodes.Name) -> str | None:
    return f"{node.name!r} is not available in templates" if node.name in _RESERVED_NAMES else None


def _attribute(node: nodes.Getattr) -> str | None:
    return f"attribute {node.attr!r} is not allowed" if node.attr.startswith("_") else None


def _item(node: nodes.Getitem) -> str | None:
    key = _const_str(node.arg)
    return f"item {key!r} is not allowed" if key is not None and key.startswith("_") else None


_CHECKERS: dict[type[nodes.Node], Callable[[Any], str | None]] = {
    nodes.Mul: _repetition,
    nodes.Mod: _formatting,
    nodes.Name: _name,
    nodes.Getattr: _attribute,
    nodes.Getitem: _item,
}


def _node_problem(node: nodes.Node, html: bool) -> str | None:
    if isinstance(node, nodes.Filter | nodes.Test):
        return _filter_or_test(node, html)
    checker = _CHECKERS.get(type(node))
    if checker is not None:
        return checker(node)
    if isinstance(node, _ALLOWED):
        return None
    return _REFUSED.get(type(node), f"{type(node).__name__} is not allowed in templates")


def check_source(source: str, *, html: bool, declared: Collection[str]) -> list[str]:
    """What is wrong with one Jinja2 source, in order; empty when it may be published."""
    try:
        return _check(source, html=html, declared=declared)
    except TOO_DEEP_ERRORS:  # parsing, walking the tree or compiling it
        return [TOO_DEEP]


def _check(source: str, *, html: bool, declared: Collection[str]) -> list[str]:
    try:
        ast = environment(html=html).parse(source)
    except TemplateSyntaxError as exc:
        return [f"does not compile: {exc.message} (line {exc.lineno})"]
    problems: list[str] = []
    used: set[str] = set()
    for node, depth in _walk(ast):
        if depth > MAX_DEPTH:
            return [TOO_DEEP]
        problem = _node_problem(node, html)
        if problem is not None and problem not in problems:
            problems.append(problem)
        if isinstance(node, nodes.Name):
            used.add(node.name)  # nothing assigns names (refused above): all are variables
    if problems:
        return problems
    try:
        compile_template(source, html=html)
    except TemplateError as exc:
        return [str(exc).removeprefix("template ")]
    undeclared = sorted(used - set(declared))
    if undeclared:
        names = ", ".join(repr(n) for n in undeclared)
        return [f"uses undeclared variable(s) {names}; declare them in the template's variables"]
    return []


def _walk(ast: nodes.Node) -> Iterator[tuple[nodes.Node, int]]:
    """Every node under ``ast`` with its depth, without recursion (the tree may be deep)."""
    stack = [(child, 1) for child in ast.iter_child_nodes()]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


def check_content(
    subject: str | None, body: str, options: Mapping[str, Any], declared: Collection[str]
) -> list[Problem]:
    """Every problem of a channel template's parts (body, subject, html, provider
    parameters, WeChat fields and URL)."""
    return [
        Problem(path, message)
        for path, source, html in template_parts(subject, body, options)
        for message in check_source(source, html=html, declared=declared)
    ]
