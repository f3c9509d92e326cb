"""A publishable template cannot burn the CPU inside the event loop (preview, and every send
of its scenario) by multiplying big integers: products and numbers are bounded."""

from __future__ import annotations

import time

import pytest

from templates import renderer
from templates.checks import check_source
from templates.renderer import TOO_DEEP, TemplateError, render
from tests.conftest import Platform

# Each block multiplies a 4,000-digit integer 40 times; nothing is printed, so the 4,300-digit
# str() limit never stops it. Hundreds of blocks fit in the 20,000 characters a body may have
# (minutes of CPU per render, unbounded); the test uses 20.
BLOCK = "{% if n" + "*n" * 40 + ">0 %}{% endif %}"
BODY = BLOCK * 20 + "您的账户有变动"
N = int("9" * 4000)


def test_a_chain_of_big_integer_products_is_refused_at_once() -> None:
    """The body is publishable (its cost depends on the variables); rendering it refuses
    the first product past the bound instead of computing the chain."""
    assert check_source(BODY, html=False, declared={"n"}) == []
    started = time.perf_counter()
    with pytest.raises(TemplateError, match=r"out of bounds|more than"):
        render(BODY, {"n": N})
    took = time.perf_counter() - started
    assert took < 1.0, f"one render took {took:.1f}s of CPU"


@pytest.mark.parametrize(
    ("source", "variables", "expected"),
    [
        ("{{ n * 100 }}", {"n": 123456789012}, "12345678901200"),
        ("{{ n * n }}", {"n": 2**128 - 1}, str((2**128 - 1) ** 2)),
        ("{{ amount|float * 100 }}", {"amount": "12.5"}, "1250.0"),
        ("{{ 'ab' * 3 }}", {}, "ababab"),
    ],
)
def test_products_within_the_bound_render(
    source: str, variables: dict[str, object], expected: str
) -> None:
    assert render(source, variables) == expected


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("{{ n * n }}", {"n": 2**128}),  # 257 bits
        ("{{ n * 1 }}", {"n": 2**300}),
        ("{{ x * x }}", {"x": 1e200}),  # overflows to infinity
        ("{{ s|int }}", {"s": "9" * 100}),
        ("{{ s|float }}", {"s": "1e400"}),
    ],
)
def test_numbers_past_the_bound_are_refused(source: str, variables: dict[str, object]) -> None:
    with pytest.raises(TemplateError, match=r"out of bounds|more than"):
        render(source, variables)


def test_checking_a_long_nested_body_takes_time_linear_in_it() -> None:
    """The largest body of nested products (as deep as publishing allows) is checked fast:
    Jinja2's constant folding, quadratic in the nesting, is off."""
    block = "{% if n" + "*n" * 44 + ">0 %}{% endif %}"
    body = block * (20_000 // len(block))
    assert not renderer.TEXT_ENV.optimized  # folding off
    assert not renderer.HTML_ENV.optimized
    renderer.compile_template.cache_clear()  # compiling is what folding would slow down
    # in this thread's CPU time: a busy machine stretched the wall time of a 1 s check past
    # the bound (with folding on, the check takes about 3 s of CPU)
    started = time.thread_time()
    assert check_source(body, html=False, declared={"n"}) == []
    took = time.thread_time() - started
    assert took < 2.0, f"checking took {took:.1f}s of CPU"
    deeper = "{% if n" + "*n" * 60 + ">0 %}{% endif %}"
    assert check_source(deeper, html=False, declared={"n"}) == [TOO_DEEP]


async def test_a_preview_cannot_hold_the_event_loop(platform: Platform) -> None:
    draft = {
        "channel": "sms",
        "variables": [{"name": "n", "type": "integer"}],
        "content": {"body": BODY},
    }
    async with platform.client("marketer") as client:
        started = time.perf_counter()
        response = await client.post(
            "/v1/templates/preview", json={"draft": draft, "variables": {"n": N}}
        )
        took = time.perf_counter() - started
    # the render runs on the event loop: every other request of the process waits this long
    assert took < 1.0, f"one preview held the event loop for {took:.1f}s ({response.status_code})"
    assert response.status_code == 422, response.text
