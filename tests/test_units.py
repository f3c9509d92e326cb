"""Pure pieces: ids, masking, logging, variable checks, the sandboxed renderer, backoff,
the classification of database errors."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from app.callbacks.service import is_opt_out
from app.db import passing_db_error
from app.ids import new_id
from app.logging import MaskingJsonFormatter
from app.masking import mask_contact, mask_name, mask_text, mask_value
from app.messages.outcomes import backoff_delay
from app.messages.variables import check_variables
from app.scenarios.schemas import VariableSpec, VariableType
from app.settings import RetrySettings, Settings
from channels.base import DeliveryReceipt
from channels.errors import PermanentChannelError
from templates.renderer import TemplateError, render


def test_ids_are_prefixed_unique_and_time_sortable() -> None:
    first = new_id("msg")
    time.sleep(0.002)
    later = [new_id("msg") for _ in range(1000)]
    assert first.startswith("msg_")
    assert len(first) == 30
    assert len(set(later)) == 1000
    assert all(first < other for other in later)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call 13800000000 now", "call 138****0000 now"),
        ("+8613912345678", "+86139****5678"),
        ("to +14155550100, +447911123456.", "to +141****0100, +4479****3456."),
        ("+44 7911 123456 / +1-415-555-0100", "+4479****3456 / +141****0100"),
        ("00447911123456", "004479****3456"),
        ("+86 138 0000 1234, 138-0000-1234", "+86 138****1234, 138****1234"),
        ("order +1234567 and 14155550100", "order +1234567 and 141****0100"),
        ("mail zhang.wei@example.com", "mail z***@example.com"),
        ("openid oAbcd1234567890123456789wxyz", "openid oAbc****wxyz"),
        ("账号6222021234567890123不是手机", "账号6222021234567890123不是手机"),
        # another country's number without "+" (as Aliyun takes it), under a phone's label
        ("PhoneNumbers=85291234567,85291234568&x=1", "PhoneNumbers=852****4567,852****4568&x=1"),
        ('{"PhoneNumbers": "447911123456"}', '{"PhoneNumbers": "4479****3456"}'),
        ('PhoneNumberSet=["85291234567"]', 'PhoneNumberSet=["852****4567"]'),
        ("手机号：85291234567，电话 85291234567", "手机号：852****4567，电话 852****4567"),
        ("phone +86 138 0000 1234", "phone +86138****1234"),
        ("PhoneNumbers=13800001234,85291234567", "PhoneNumbers=138****1234,852****4567"),
        ("phones: 85291234567 85291234568", "phones: 852****4567 852****4568"),
        (
            "mobile_phone=85291234567; phone_no: 85291234568",
            "mobile_phone=852****4567; phone_no: 852****4568",
        ),
        ("订单号码：12345678, order 85291234567", "订单号码：12345678, order 85291234567"),
    ],
)
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_whitespace_after_a_phones_label_takes_linear_time() -> None:
    """The labels' pattern runs on every log line: a long run of spaces after a label must
    not make it quadratic (it took 1.7 s for 6,000 spaces)."""
    text = "phone" + " " * 6_000 + "x"
    started = time.perf_counter()
    assert mask_text(text) == text
    assert time.perf_counter() - started < 0.5


def test_mask_contacts_and_names() -> None:
    assert mask_contact("phone", "13800000000") == "138****0000"
    assert mask_contact("email", "a@b.cn") == "a***@b.cn"
    assert mask_contact("wechat_openid", "oDemo0000000000000000000001") == "oDem****0001"
    assert mask_name("欧阳娜娜") == "欧***"


def test_contact_keys_are_masked_whatever_the_number_looks_like() -> None:
    """A log's extras, or a provider's request or answer: a contact key's value is masked
    even when nothing in the text says it is a phone number."""
    masked = mask_value(
        {
            "PhoneNumbers": "13800001234,85291234567",
            "phone": 85291234567,
            "to": "447911123456",
            "sender": "+85291234567",
            "request": {"phone_numbers": ["85291234567"], "touser": "oAbcd1234567890123456789wxyz"},
            "email": "ops@localhost",
            "amount": "12345678901",
            "reference": "85291234567",
        }
    )
    assert masked == {
        "PhoneNumbers": "138****1234,852****4567",
        "phone": "852****4567",
        "to": "4479****3456",
        "sender": "+852****4567",
        "request": {"phone_numbers": ["852****4567"], "touser": "oAbc****wxyz"},
        "email": "o***@localhost",
        "amount": "12345678901",
        "reference": "85291234567",
    }


def test_json_logs_mask_personal_data_in_message_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingJsonFormatter())
    logger = logging.getLogger("icc.test.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "sent to 13800000000",
            extra={"to": {"email": "li.na@example.com"}, "PhoneNumbers": "85291234567"},
        )
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "sent to 138****0000"
    assert entry["to"] == {"email": "l***@example.com"}
    assert entry["PhoneNumbers"] == "852****4567"  # a contact key at the top level too
    assert "13800000000" not in stream.getvalue()


def test_variable_checks() -> None:
    specs = [
        VariableSpec(name="amount", type=VariableType.decimal),
        VariableSpec(name="count", type=VariableType.integer),
        VariableSpec(name="when", type=VariableType.datetime),
        VariableSpec(name="flag", type=VariableType.boolean),
    ]
    ok = {"amount": "1200.00", "count": 3, "when": "2026-11-23T10:00:00+08:00", "flag": True}
    assert check_variables(specs, ok) == []
    bad = {"amount": 1200.5, "count": True, "when": "yesterday"}
    fields = {e.field: e.message for e in check_variables(specs, bad)}
    assert set(fields) == {
        "variables.amount",
        "variables.count",
        "variables.when",
        "variables.flag",
    }
    assert "decimal string" in fields["variables.amount"]
    assert check_variables(specs[:1], {"amount": "NaN"})[0].field == "variables.amount"


def test_renderer_is_strict_and_sandboxed() -> None:
    assert render("尾号{{ tail }}", {"tail": "1234"}) == "尾号1234"
    with pytest.raises(TemplateError, match="unknown variable"):
        render("{{ missing }}", {})
    with pytest.raises(TemplateError, match="does not compile"):
        render("{{ unclosed", {})
    for payload in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
    ):
        with pytest.raises(TemplateError):
            render(payload, {})
    assert render("<b>{{ x }}</b>", {"x": "<script>"}, html=True) == "<b>&lt;script&gt;</b>"


def test_backoff_grows_and_is_capped() -> None:
    retry = RetrySettings(base_delay=1.0, max_delay=8.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        delays = [backoff_delay(attempt, retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0  # jittered


def test_settings_accept_plain_database_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICC_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ICC_QUEUE__WORKERS", "7")
    monkeypatch.setenv("ICC_REDIS_URL", "")
    monkeypatch.setenv("ICC_BOOTSTRAP_ADMIN_KEY", "secret-value")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.queue.workers == 7
    assert settings.redis_url is None
    assert "secret-value" not in repr(settings)
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_characters="{}%#\r"), max_size=8),
            st.sampled_from(["{{ a }}", "{{b}}", "{{  amount  }}", "{{ a.b }}", "{{ a|upper }}"]),
        ),
        max_size=8,
    ),
    trailing=st.booleans(),
)
def test_plain_substitution_renders_like_jinja(pieces: list[str], trailing: bool) -> None:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    source = "".join(pieces) + ("\n" if trailing else "")
    variables = {"a": "尾号1234", "b": None, "amount": 1200, "upper": "x"}
    jinja = SandboxedEnvironment(undefined=StrictUndefined).from_string(source)
    try:
        expected: str | None = jinja.render(variables)
    except Exception:
        expected = None
    try:
        actual: str | None = render(source, variables)
    except TemplateError:
        actual = None
    assert actual == expected


def test_plain_substitution_reports_unknown_variables() -> None:
    with pytest.raises(TemplateError, match="'missing' is undefined"):
        render("尾号{{ missing }}", {})


def test_a_rate_limit_wait_does_not_use_up_attempts() -> None:
    from datetime import UTC, datetime

    from app.messages.outcomes import RATE_LIMITED, Attempt, Claimed, decide
    from channels.errors import TransientChannelError

    now = datetime(2026, 11, 23, tzinfo=UTC)
    message = Claimed("msg_1", ["sms"], 0, {"phone": "13800000000"}, {}, 7, 3)
    limited = Attempt("sms", "p", 0.0, error=TransientChannelError("busy", code=RATE_LIMITED))
    outcome = decide(message, [limited], RetrySettings(max_attempts=3, base_delay=0.1), now)
    assert outcome.values["status"] == "retrying"
    assert outcome.values["channel_attempts"] == 2  # the claim's increment is given back
    assert outcome.requeue_delay is not None
    assert outcome.requeue_delay >= 5.0
    failed = Attempt("sms", "p", 0.0, error=TransientChannelError("503", code="503"))
    assert (
        decide(message, [failed], RetrySettings(max_attempts=3), now).values["status"] == "failed"
    )


def test_passing_db_errors_are_told_from_errors_of_the_statement() -> None:
    """What the worker retries when writing outcomes (app.db.passing_db_error)."""

    class WrappedPg(Exception):  # as SQLAlchemy's asyncpg adapter wraps a server error
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    def through_sqlalchemy(sqlstate: str) -> DBAPIError:
        return DBAPIError("UPDATE messages ...", {}, WrappedPg(sqlstate))

    passing = [
        through_sqlalchemy("40P01"),  # deadlock
        through_sqlalchemy("08006"),  # connection failure
        through_sqlalchemy("57P01"),  # the server shutting down
        through_sqlalchemy("25006"),  # read-only: a failover
        OperationalError("UPDATE messages ...", {}, sqlite3.OperationalError("disk I/O")),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.LockNotAvailableError("lock timeout"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionResetError(),
        SQLAlchemyTimeoutError("QueuePool limit reached"),
    ]
    not_passing = [
        through_sqlalchemy("22012"),  # division by zero
        through_sqlalchemy("22P02"),  # bad input
        IntegrityError("INSERT ...", {}, Exception("duplicate")),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.DataError("bad data"),
        ValueError("a bug"),
    ]
    assert [passing_db_error(e) for e in passing] == [True] * len(passing)
    assert [passing_db_error(e) for e in not_passing] == [False] * len(not_passing)


def test_provider_texts_are_masked_where_they_are_kept() -> None:
    """A provider's error text and receipt text go on timelines and into logs: masked."""
    error = PermanentChannelError("mobile 13800001234 invalid; notify li.wei@bank.example")
    assert error.detail == "mobile 138****1234 invalid; notify l***@bank.example"
    assert str(error) == error.detail
    receipt = DeliveryReceipt(delivered=False, detail="号码13800001234停机")
    assert receipt.detail == "号码138****1234停机"
    assert DeliveryReceipt(delivered=True).detail is None


OPT_OUTS = ("TD", "ＴＤ", "Ｔ Ｄ", " td ", "退订。", "退订！", "TD。", "Stop!", "退订🙏", "t")
INSTRUCTIONS = ("回复TD退订", "回复退订", "拒收请回复R", "TD退订")


@pytest.mark.parametrize("text", [*OPT_OUTS, *INSTRUCTIONS])
def test_opt_out_replies_however_typed(text: str) -> None:
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text", ["不要退订", "TDK", "TNT", "NO", "R2", "", "请问退订后还能收到账户通知吗", "谢谢"]
)
def test_replies_that_are_not_opt_outs(text: str) -> None:
    assert not is_opt_out(text)
