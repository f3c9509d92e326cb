"""Pure: the bankers' filters, the publish checks and the renderer's own defenses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from templates.checks import check_content, check_source
from templates.renderer import TemplateError, render, render_channel

# Known server-side template injection payloads (Jinja2 / Flask SSTI lists, sandbox escapes,
# resource bombs).
INJECTIONS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ self }}",
    "{{ self.__dict__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ request.application.__globals__ }}",
    "{{ x['__class__'] }}",
    "{{ x|attr('__class__') }}",
    "{{ range(100000000)|list }}",
    "{% for i in range(999999999) %}x{% endfor %}",
    "{{ 'a' * 1000000000 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ '%999999999s' % 'a' }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ '{0:>999999999}'.format(x) }}",
    "{{ x|center(999999999) }}",
    "{{ x|format(1) }}",
    "{% set a = x ~ x %}{% set a = a ~ a %}{{ a }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% autoescape false %}{{ x }}{% endautoescape %}",
]


@pytest.mark.parametrize(
    ("value", "args", "expected"),
    [
        ("1200", (), "¥1,200.00"),
        ("1200.00", (), "¥1,200.00"),
        (1200, (), "¥1,200.00"),
        (Decimal("1234567.891"), (), "¥1,234,567.89"),
        ("1200.005", (), "¥1,200.01"),  # 四舍五入, not to even
        ("0.125", (), "¥0.13"),
        ("-1200.5", (), "-¥1,200.50"),
        ("-0.004", (), "¥0.00"),  # no negative zero
        ("0", (), "¥0.00"),
        (0.1, (), "¥0.10"),  # a float by its shortest repr, not 0.1000000000000000055...
        ("123456789012345678901234567890.125", (), "¥123,456,789,012,345,678,901,234,567,890.13"),
        ("99.5", ("US$",), "US$99.50"),
        ("-99.5", ("€",), "-€99.50"),
        ("2.5", ("¥", 0), "¥3"),
        ("1234.5678", ("", 3), "1,234.568"),
        (" 7 ", (), "¥7.00"),
    ],
)
def test_money_is_decimal_exact(value: Any, args: tuple[Any, ...], expected: str) -> None:
    arguments = ", ".join(repr(a) for a in args)
    source = f"{{{{ v|money({arguments}) }}}}"
    assert render(source, {"v": value}) == expected


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1E+100", True, "", "1,200.00"])
def test_money_refuses_what_is_not_an_amount(value: Any) -> None:
    with pytest.raises(TemplateError, match="money"):
        render("{{ v|money }}", {"v": value})


def test_money_arguments_are_checked() -> None:
    with pytest.raises(TemplateError, match="places"):
        render("{{ v|money('¥', 9) }}", {"v": "1"})
    with pytest.raises(TemplateError, match="symbol"):
        render("{{ v|money('currency-symbol') }}", {"v": "1"})


def test_dates_are_shown_in_the_customers_time_zone() -> None:
    at = {"at": "2025-01-01T00:30:00Z", "day": "2025-03-08"}
    assert render("{{ at|datetime }}", at) == "2025-01-01 08:30"  # Asia/Shanghai
    assert render("{{ at|datetime('%m月%d日 %H:%M') }}", at) == "01月01日 08:30"
    assert render("{{ at|datetime }}", at, timezone="America/New_York") == "2024-12-31 19:30"
    assert render("{{ at|datetime(tz='UTC') }}", at, timezone="Asia/Tokyo") == "2025-01-01 00:30"
    assert render("{{ at|date }}", at, timezone="America/New_York") == "2024-12-31"
    assert render("{{ day|date('%Y年%m月%d日') }}", at) == "2025年03月08日"
    # a time without an offset is taken as local
    assert render("{{ t|datetime('%H:%M') }}", {"t": "2025-01-01T09:00:00"}) == "09:00"
    # a customer's unknown zone falls back to the default rather than block a notice
    assert render("{{ at|datetime }}", at, timezone="Nowhere/Land") == "2025-01-01 08:30"


@pytest.mark.parametrize(
    ("source", "variables", "match"),
    [
        ("{{ day|datetime }}", {"day": "2025-03-08"}, "date without a time"),
        ("{{ v|date }}", {"v": "yesterday"}, "not an ISO 8601"),
        ("{{ v|date(tz='Mars/Olympus') }}", {"v": "2025-01-01T00:00:00Z"}, "unknown time zone"),
        ("{{ v|date }}", {"v": 20250101}, "not an ISO 8601"),
    ],
)
def test_date_filters_report_bad_values(source: str, variables: dict[str, Any], match: str) -> None:
    with pytest.raises(TemplateError, match=match):
        render(source, variables)


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("{{ v|tail }}", "6222021001121234", "尾号1234"),
        ("{{ v|tail }}", "6222 0210 0112 1234", "尾号1234"),
        ("{{ v|tail(3) }}", "6222-0210-0112-1234", "尾号234"),
        ("{{ v|tail(4, '') }}", 6222021001121234, "1234"),
        ("{{ v|mask_phone }}", "13800000000", "138****0000"),
        ("{{ v|mask_phone }}", "+8613800000000", "+86138****0000"),
        ("{{ v|mask_phone }}", "138 0000 0000", "138****0000"),
        ("{{ v|mask_name }}", "张三", "张*"),
        ("{{ v|mask_name }}", "张三丰", "张**"),
        ("{{ v|mask_name }}", "欧阳娜娜", "欧***"),
        ("{{ v|mask_email }}", "zhang.wei@example.com", "z***@example.com"),
    ],
)
def test_masking_filters(source: str, value: Any, expected: str) -> None:
    assert render(source, {"v": value}) == expected


def test_html_parts_are_escaped_and_text_parts_are_not() -> None:
    content = render_channel(
        subject="{{ name }} & co",
        body="<{{ name }}> {{ amount|money }}",
        options={"html": "<p>{{ name }} {{ amount|money }}</p>"},
        variables={"name": "<script>alert(1)</script>", "amount": "5"},
    )
    assert content["subject"] == "<script>alert(1)</script> & co"
    assert content["body"] == "<<script>alert(1)</script>> ¥5.00"
    assert content["html"] == "<p>&lt;script&gt;alert(1)&lt;/script&gt; ¥5.00</p>"


def test_variables_are_values_never_templates() -> None:
    assert render("{{ v }}", {"v": "{{ 7*7 }}{% raw %}"}) == "{{ 7*7 }}{% raw %}"
    assert render("{{ v|upper }}", {"v": "{{ self }}"}) == "{{ SELF }}"


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_are_refused_at_publish(payload: str) -> None:
    assert check_source(payload, html=False, declared={"x"}), payload
    assert check_source(payload, html=True, declared={"x"}), payload


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_are_inert_when_rendered_anyway(payload: str) -> None:
    """Templates stored before publishing checked them render in the narrowed sandbox:
    a payload is an error or harmless text; none reaches an object, none takes long."""
    try:
        out = render(payload, {"x": "1"})
    except TemplateError:
        return
    assert out in ("1", "1111"), out


def test_output_is_bounded() -> None:
    big = "%" * 300_000  # urlencode triples it: the filter's own result is refused
    with pytest.raises(TemplateError, match="more than"):
        render("{{ v|urlencode|urlencode }}", {"v": big})
    with pytest.raises(TemplateError, match="more than"):
        render("{{ v }}{{ v }}{{ v }}{{ v }}{% if true %}{% endif %}", {"v": "x" * 300_000})
    assert render("{{ '-' * 20 }}", {}) == "-" * 20


def test_publish_checks_name_the_problem() -> None:
    declared = {"amount", "at", "tail"}
    ok = (
        "{% if amount|float > 1000 %}大额{% elif tail is defined %}{{ tail|tail }}{% else %}"
        "{{ (amount ~ '元')|upper }}{% endif %}{{ at|datetime('%H:%M', tz='UTC') }}"
        "{{ amount|money('$', places=0) if amount else '-' }}{{ tail[-4:] }}{{ '=' * 10 }}"
    )
    assert check_source(ok, html=False, declared=declared) == []
    cases = {
        "{{ amount": "does not compile",
        "{{ branch }}": "undeclared variable(s) 'branch'",
        "{{ amount|currency }}": "unknown filter 'currency'; available: ",
        "{% if amount is money %}{% endif %}": "unknown test 'money'",
        "{{ amount.__class__ }}": "attribute '__class__' is not allowed",
        "{% for c in tail %}{% endfor %}": "loops are not allowed",
        "{{ tail.upper() }}": "calls are not allowed",
        "{{ self }}": "'self' is not available",
    }
    for source, problem in cases.items():
        found = check_source(source, html=False, declared=declared)
        assert found, source
        assert problem in found[0], (source, found)


def test_publish_checks_cover_every_part() -> None:
    problems = check_content(
        "{{ subject_var }}",
        "{{ ok }}",
        {
            "html": "<p>{{ html_var }}</p>",
            "provider_templates": {"aliyun_sms": {"template_code": "S", "params": {"a": "{{"}}},
            "wechat": {"template_id": "T", "fields": {"k": "{{ x|nope }}"}, "url": "{{ u }}"},
        },
        {"ok"},
    )
    assert [p.path for p in problems] == [
        "subject",
        "html",
        "provider_templates.aliyun_sms.params.a",
        "wechat.fields.k",
        "wechat.url",
    ]
