"""A bank's in-house SMS platform over HTTP (``http_sms``): free text, one request per message.

Settings:

==================  ========================================================================
``url``             the gateway URL (required)
``method``          ``POST`` (default: the rendered body is sent as JSON) or ``GET`` (the
                    rendered body must be a JSON object: its members become query parameters)
``headers``         extra request headers, e.g. ``{"Authorization": "Bearer ${SMS_TOKEN}"}``
``body_template``   a Jinja2 template (sandboxed) rendering the JSON body from ``to``, ``text``,
                    ``message_id`` and ``sign``; use ``|tojson`` for values. Default:
                    ``{"to": {{ to|tojson }}, "text": {{ text|tojson }}, ...}``
``sign``            the signature name handed to the template (default empty)
``success_field``   dotted path of the field that says the send succeeded (``code``,
                    ``result.status``, ``items.0.ok``); without it any HTTP 2xx is success
``success_value``   the value that field must have (compared as text; booleans as
                    ``true``/``false``); without it the field must be truthy
``message_id_field`` dotted path of the gateway's message id (else our message id is kept)
``error_code_field`` dotted path of the error code on failure (else the success field's value)
``transient_codes`` failure codes worth retrying (e.g. the gateway's "busy"); others permanent
``timeout``         seconds (default 10)
==================  ========================================================================

Outcome: HTTP 5xx, 408, 429, timeouts and network errors are transient; other 4xx are
permanent (the request itself is wrong and will stay wrong); a 2xx whose success field says
no is permanent unless its code is in ``transient_codes``; a 2xx that cannot be read while a
field must be checked is transient, as for the other adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from jinja2 import StrictUndefined, TemplateError
from jinja2 import Template as JinjaTemplate
from jinja2.sandbox import SandboxedEnvironment

from channels.base import ProviderContext, SendResult
from channels.errors import (
    PermanentChannelError,
    TransientChannelError,
)
from channels.http import HttpRequest, HttpResponse, encoded_url, host_header
from channels.sms import SmsProvider

DEFAULT_BODY_TEMPLATE = (
    '{"to": {{ to|tojson }}, "text": {{ text|tojson }}, '
    '"message_id": {{ message_id|tojson }}, "sign": {{ sign|tojson }}}'
)
METHODS = ("POST", "GET")
RETRYABLE_STATUSES = frozenset({408, 429})
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_SAMPLE = {"to": "13800138000", "text": '测试 "quoted"', "message_id": "m1", "sign": "银行"}
_MISSING = object()


class HttpSmsProvider(SmsProvider):
    """A generic HTTP SMS gateway taking free text; see the module docstring for settings."""

    type_name = "http_sms"
    default_rate = 100.0  # in-house platforms vary: set rate_per_second per account

    def __init__(
        self,
        *,
        account: str,
        channel: str,
        settings: Mapping[str, Any] | None = None,
        context: ProviderContext,
    ) -> None:
        super().__init__(account=account, channel=channel, settings=settings, context=context)
        self.url = self.config.url("url")
        self.method = self.config.text("method", "POST").upper()
        if self.method not in METHODS:
            raise self.config.error("method", f"must be one of {', '.join(METHODS)}")
        self.headers = self._headers()
        self.sign = self.config.optional_text("sign") or ""
        self._template = self._body_template()
        # The default template, written out: same bytes, without Jinja or a re-parse.
        self._default_body = self.config.text("body_template", DEFAULT_BODY_TEMPLATE) == (
            DEFAULT_BODY_TEMPLATE
        )
        self._sign_tail = b', "sign": ' + _tojson(self.sign).encode() + b"}"
        self._target = encoded_url(self.url)
        self._request_headers = self._fixed_headers()
        self._url_base, self._url_params = _split_query(self._target)
        self.success_field = self.config.optional_text("success_field")
        self.success_value = self.settings.get("success_value")
        self.message_id_field = self.config.optional_text("message_id_field")
        self.error_code_field = self.config.optional_text("error_code_field")
        self.transient_codes = self._codes("transient_codes")
        self._success_path = _path(self.success_field)
        self._id_path = _path(self.message_id_field)
        self._code_path = _path(self.error_code_field)
        self._success_text = None if self.success_value is None else _text(self.success_value)

    # -- settings ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = self.settings.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise self.config.error("headers", "must map header names to string values")
        return dict(headers)

    def _body_template(self) -> JinjaTemplate:
        source = self.config.text("body_template", DEFAULT_BODY_TEMPLATE)
        try:
            template = _ENV.from_string(source)
            sample = orjson.loads(template.render(_SAMPLE))
        except TemplateError as exc:
            raise self.config.error("body_template", f"does not render: {exc}") from None
        except orjson.JSONDecodeError as exc:
            raise self.config.error("body_template", f"does not render JSON: {exc}") from None
        if self.method == "GET" and not isinstance(sample, dict):
            raise self.config.error("body_template", "must render a JSON object for GET")
        return template

    def _fixed_headers(self) -> dict[str, str]:
        """The headers of every request: built once (the user's names keep their case)."""
        headers = {"host": host_header(self._target)}
        if self.method == "POST" and not any(k.lower() == "content-type" for k in self.headers):
            headers["content-type"] = "application/json"
        return headers | {k: v for k, v in self.headers.items() if k.lower() != "host"}

    def _codes(self, name: str) -> frozenset[str]:
        codes = self.settings.get(name) or []
        if not isinstance(codes, Sequence) or isinstance(codes, str):
            raise self.config.error(name, "must be a list of codes")
        return frozenset(str(code) for code in codes)

    # -- send -------------------------------------------------------------------------------

    def build_request(self, *, to: str, content: Mapping[str, Any], message_id: str) -> HttpRequest:
        text = content.get("body")
        if not isinstance(text, str) or not text.strip():
            raise PermanentChannelError("no SMS text in the rendered content", code="no_body")
        if self._default_body and isinstance(to, str) and isinstance(message_id, str):
            body = self._default(to, text, message_id)
        else:
            body = self._render(to=to, text=text, message_id=message_id)
        headers = self._request_headers.copy()  # the request is the caller's to change
        if self.method == "GET":
            params = {str(k): _text(v) for k, v in orjson.loads(body).items()}
            return HttpRequest("GET", self._with_query(params), headers)
        return HttpRequest("POST", self._target, headers, body)

    def _default(self, to: str, text: str, message_id: str) -> bytes:
        """``DEFAULT_BODY_TEMPLATE`` rendered: ``|tojson`` of a string is json.dumps's
        ASCII-escaped literal with ``<>&'`` escaped too."""
        to_json, text_json, id_json = _tojson(to), _tojson(text), _tojson(message_id)
        head = f'{{"to": {to_json}, "text": {text_json}, "message_id": {id_json}'
        return head.encode() + self._sign_tail

    def _with_query(self, params: Mapping[str, str]) -> str:
        """The URL with ``params`` merged into its own query (theirs win), form-encoded."""
        return f"{self._url_base}?{urlencode({**self._url_params, **params})}"

    def _render(self, **variables: str) -> bytes:
        try:
            rendered = self._template.render(sign=self.sign, **variables)
            parsed = orjson.loads(rendered)
        except (TemplateError, orjson.JSONDecodeError) as exc:
            raise PermanentChannelError(
                f"body_template failed for this message: {exc}", code="template_error"
            ) from None
        if self.method == "GET" and not isinstance(parsed, dict):
            raise PermanentChannelError("body_template rendered no object", code="template_error")
        return rendered.encode()

    def read_outcome(self, response: HttpResponse, message_id: str) -> SendResult:
        status = response.status_code
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise TransientChannelError(f"gateway answered HTTP {status}", code=f"http_{status}")
        if status >= 300:
            raise PermanentChannelError(f"gateway answered HTTP {status}", code=f"http_{status}")
        answer = self._answer(response)
        if self.success_field is not None:
            self._check_success(answer)
        provider_id = lookup(answer, self._id_path) if self._id_path else None
        if provider_id is _MISSING or provider_id is None or isinstance(provider_id, dict | list):
            provider_id = message_id
        return SendResult(provider_message_id=str(provider_id), detail={"status": status})

    def _answer(self, response: HttpResponse) -> Any:
        if self.success_field is None and self.message_id_field is None:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            if self.success_field is None:
                return None
            raise TransientChannelError(
                "gateway answered 2xx without readable JSON", code="bad_answer"
            ) from None

    def _check_success(self, answer: Any) -> None:
        assert self.success_field is not None
        actual = lookup(answer, self._success_path)
        if self.success_value is None:
            succeeded = actual is not _MISSING and bool(actual)
        else:
            succeeded = actual is not _MISSING and _text(actual) == self._success_text
        if succeeded:
            return
        code = lookup(answer, self._code_path) if self._code_path else actual
        code_text = "missing" if code is _MISSING else _text(code)
        detail = f"gateway refused the message ({self.success_field}={code_text})"
        if code_text in self.transient_codes:
            raise TransientChannelError(detail, code=code_text)
        raise PermanentChannelError(detail, code=code_text)


def _path(dotted: str | None) -> tuple[str, ...]:
    return tuple(dotted.split(".")) if dotted else ()


def lookup(data: Any, path: str | tuple[str, ...]) -> Any:
    """The value at a dotted path (``a.b.0.c``, or its parts), or ``_MISSING``."""
    current = data
    for part in path.split(".") if isinstance(path, str) else path:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _tojson(value: str) -> str:
    """Jinja's ``|tojson`` of a string."""
    return (
        encode_basestring_ascii(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def _split_query(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its query, and the query's parameters."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
